import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";

/** Scenario 1: single events, the maximum accepted (closed loop) and the latency at a fixed rate (open loop). */
export const singleEvents: Scenario = {
  name: "scenario 1",
  selectedBy: [1],
  async run(bench) {
    const { cfg, phases, load, tenants } = bench;
    say("scenario 1: single events, maximum accepted events/s");
    const max = await phases.run("1 max", [await bench.startApi("api-s1max")], () =>
      load.maxLoad("track", tenants.main.key),
    );
    say(`  ${fmt(max.eventsPerSec)} events/s, p99 ${fmt(max.latencyMs.p99)} ms`);
    say(`scenario 1: latency at a fixed ${cfg.e2eRate} req/s (open loop)`);
    const fixed = await phases.run("1 fixed rate", [await bench.startApi("api-s1fixed")], () =>
      load.pacedLoad({ keys: [tenants.main.key], weights: [1], rate: cfg.e2eRate }),
    );
    say(
      `  p50 ${fmt(fixed.latencyMs.p50, 2)} / p95 ${fmt(fixed.latencyMs.p95, 2)} / p99 ${fmt(fixed.latencyMs.p99, 2)} ms`,
    );
    bench.results.scenario1 = {
      max,
      fixed: {
        rate: cfg.e2eRate,
        latencyMs: fixed.latencyMs,
        statuses: fixed.statuses,
        dropped: fixed.dropped,
        maxInFlight: fixed.maxInFlight,
      },
    };
  },
};
