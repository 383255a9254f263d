import type { Scenario } from "../bench-run.ts";
import { type BenchConfig, say } from "../config.ts";
import { fmt } from "../report.ts";

/**
 * Scenario 4, latency: open loop at BENCH_E2E_RATE over the e2e businesses, API 202 to contact.updated.v1. It
 * also runs for scenario 5 alone, whose baseline is its other businesses' p95 here. `endToEndLatencyHigh` repeats it
 * at BENCH_E2E_RATE_HIGH (issue 13).
 */
export const endToEndLatency: Scenario = latencyAt(
  "4 latency",
  [4, 5],
  (cfg) => cfg.e2eRate,
  "scenario4Latency",
);
export const endToEndLatencyHigh: Scenario = latencyAt(
  "4 latency high",
  [4],
  (cfg) => cfg.e2eRateHigh,
  "scenario4LatencyHigh",
);

function latencyAt(
  phase: string,
  selectedBy: number[],
  rateOf: (cfg: BenchConfig) => number,
  into: "scenario4Latency" | "scenario4LatencyHigh",
): Scenario {
  const suffix = into === "scenario4Latency" ? "s4lat" : "s4hi";
  return {
    name: `scenario ${phase}`,
    selectedBy,
    readsContactUpdates: true,
    async run(bench) {
      const rate = rateOf(bench.cfg);
      const updates = await bench.contactUpdates();
      const keys = bench.tenants.e2e.map((tenant) => tenant.key);
      say(`scenario 4: end-to-end latency at ${rate} events/s over ${keys.length} tenants`);
      const services = [
        await bench.startApi(`api-${suffix}`),
        (await bench.startWorker(`worker-${suffix}`)).worker,
      ];
      const { load, e2e } = await bench.phases.run(phase, services, async () => {
        const load = await bench.load.pacedLoad({ keys, weights: keys.map(() => 1), rate });
        const all = await updates.latency(load.records, undefined);
        const othersOnly = await updates.latency(load.records, keys.map((_, i) => i).slice(1));
        return { load, e2e: { all, othersOnly } };
      });
      say(
        `  e2e p50 ${fmt(e2e.all.latencyMs.p50)} / p95 ${fmt(e2e.all.latencyMs.p95)} / p99 ${fmt(e2e.all.latencyMs.p99)} ms (${e2e.all.unmatched} unmatched of ${e2e.all.expected})`,
      );
      bench.results[into] = {
        rate,
        tenants: keys.length,
        apiLatencyMs: load.latencyMs,
        statuses: load.statuses,
        e2e,
      };
    },
  };
}
