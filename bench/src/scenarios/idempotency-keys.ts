import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";

/** Scenario 3: single events, each with a new Idempotency-Key. */
export const idempotencyKeys: Scenario = {
  name: "scenario 3",
  selectedBy: [3],
  async run(bench) {
    say("scenario 3: single events with idempotency keys");
    const idem = await bench.phases.run("3 idempotency", [await bench.startApi("api-s3")], () =>
      bench.load.maxLoad("idempotent", bench.tenants.main.key),
    );
    say(`  ${fmt(idem.eventsPerSec)} events/s, p95 ${fmt(idem.latencyMs.p95)} ms`);
    bench.results.scenario3 = idem;
  },
};
