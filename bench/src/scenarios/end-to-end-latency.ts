import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";

/**
 * Scenario 4, latency: open loop at BENCH_E2E_RATE over the e2e businesses, API 202 to contact.updated.v1. It
 * also runs for scenario 5 alone, whose baseline is its other businesses' p95 here.
 */
export const endToEndLatency: Scenario = {
  name: "scenario 4 latency",
  selectedBy: [4, 5],
  readsContactUpdates: true,
  async run(bench) {
    const { cfg } = bench;
    const updates = await bench.contactUpdates();
    const keys = bench.tenants.e2e.map((tenant) => tenant.key);
    say(`scenario 4: end-to-end latency at ${cfg.e2eRate} events/s over ${keys.length} tenants`);
    const services = [await bench.startApi("api-s4lat"), (await bench.startWorker("worker-s4lat")).worker];
    const { load, e2e } = await bench.phases.run("4 latency", services, async () => {
      const load = await bench.load.pacedLoad({ keys, weights: keys.map(() => 1), rate: cfg.e2eRate });
      const all = await updates.latency(load.records, undefined);
      const othersOnly = await updates.latency(load.records, keys.map((_, i) => i).slice(1));
      return { load, e2e: { all, othersOnly } };
    });
    say(
      `  e2e p50 ${fmt(e2e.all.latencyMs.p50)} / p95 ${fmt(e2e.all.latencyMs.p95)} / p99 ${fmt(e2e.all.latencyMs.p99)} ms (${e2e.all.unmatched} unmatched of ${e2e.all.expected})`,
    );
    bench.results.scenario4Latency = {
      rate: cfg.e2eRate,
      tenants: keys.length,
      apiLatencyMs: load.latencyMs,
      statuses: load.statuses,
      e2e,
    };
  },
};
