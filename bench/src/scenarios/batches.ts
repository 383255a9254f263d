import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";

/** Scenario 2: batches of 100, the maximum accepted events/s. */
export const batches: Scenario = {
  name: "scenario 2",
  selectedBy: [2],
  async run(bench) {
    say("scenario 2: batches of 100");
    const batch = await bench.phases.run("2 batch", [await bench.startApi("api-s2")], () =>
      bench.load.maxLoad("batch", bench.tenants.main.key),
    );
    say(`  ${fmt(batch.eventsPerSec)} events/s`);
    bench.results.scenario2 = batch;
  },
};
