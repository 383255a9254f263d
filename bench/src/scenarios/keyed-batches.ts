import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt, ratio } from "../report.ts";

/** Scenario 3b (issue 13): batches of 100 whose every item has its own idempotency_key, against scenario 2. */
export const keyedBatches: Scenario = {
  name: "scenario 3b",
  selectedBy: [3],
  async run(bench) {
    say("scenario 3b: batches of 100, every item keyed");
    const keyed = await bench.phases.run("3b keyed batch", [await bench.startApi("api-s3b")], () =>
      bench.load.maxLoad("batch-keyed", bench.tenants.main.key),
    );
    say(
      `  ${fmt(keyed.eventsPerSec)} events/s (${ratio(keyed.eventsPerSec, bench.results.scenario2?.eventsPerSec)} of scenario 2)`,
    );
    bench.results.scenario3KeyedBatch = keyed;
  },
};
