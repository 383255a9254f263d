import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";

/** Scenario 5: scenario 4's latency run with one business sending 90% of the same total. */
export const hotTenant: Scenario = {
  name: "scenario 5",
  selectedBy: [5],
  readsContactUpdates: true,
  async run(bench) {
    const { cfg } = bench;
    const { hot, others } = bench.tenants;
    const updates = await bench.contactUpdates();
    say(`scenario 5: hot tenant at 90% of ${cfg.e2eRate} events/s`);
    const keys = [hot.key, ...others.map((tenant) => tenant.key)];
    const weights = [9 * others.length, ...others.map(() => 1)];
    const services = [await bench.startApi("api-s5"), (await bench.startWorker("worker-s5")).worker];
    const { e2eOthers, e2eHot, load } = await bench.phases.run("5 hot tenant", services, async () => {
      const load = await bench.load.pacedLoad({ keys, weights, rate: cfg.e2eRate });
      const e2eOthers = await updates.latency(
        load.records,
        others.map((_, i) => i + 1),
      );
      const e2eHot = await updates.latency(load.records, [0]);
      return { e2eOthers, e2eHot, load };
    });
    // The same businesses' p95 without the hot one, from scenario 4 in this run.
    const baselineOthersP95 = bench.results.scenario4Latency?.e2e.othersOnly.latencyMs.p95;
    say(
      `  others' e2e p95 ${fmt(e2eOthers.latencyMs.p95)} ms (baseline ${fmt(baselineOthersP95)} ms), hot p95 ${fmt(e2eHot.latencyMs.p95)} ms`,
    );
    bench.results.scenario5 = {
      rate: cfg.e2eRate,
      hotShare: 0.9,
      others: e2eOthers,
      hot: e2eHot,
      baselineOthersP95Ms: baselineOthersP95,
      apiLatencyMs: load.latencyMs,
      statuses: load.statuses,
    };
  },
};
