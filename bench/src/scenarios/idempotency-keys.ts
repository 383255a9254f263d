import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt, ratio } from "../report.ts";

/**
 * Scenario 3: single events, each with a new Idempotency-Key: the maximum accepted (closed loop, against scenario
 * 1's in the same run) and the latency at scenario 1's fixed rate (open loop).
 */
export const idempotencyKeys: Scenario = {
  name: "scenario 3",
  selectedBy: [3],
  async run(bench) {
    const { cfg, phases, load, tenants, results } = bench;
    say("scenario 3: single events with idempotency keys, maximum accepted events/s");
    const max = await phases.run("3 idempotency", [await bench.startApi("api-s3")], () =>
      load.maxLoad("idempotent", tenants.main.key),
    );
    say(
      `  ${fmt(max.eventsPerSec)} events/s, p95 ${fmt(max.latencyMs.p95)} ms (${ratio(max.eventsPerSec, results.scenario1?.max.eventsPerSec)} of scenario 1)`,
    );
    say(`scenario 3: keyed single events at a fixed ${cfg.e2eRate} req/s (open loop)`);
    const fixed = await phases.run("3 fixed rate", [await bench.startApi("api-s3fixed")], () =>
      load.pacedLoad({ keys: [tenants.main.key], weights: [1], rate: cfg.e2eRate, idempotencyKeys: true }),
    );
    say(
      `  p50 ${fmt(fixed.latencyMs.p50, 2)} / p95 ${fmt(fixed.latencyMs.p95, 2)} / p99 ${fmt(fixed.latencyMs.p99, 2)} ms`,
    );
    results.scenario3 = max;
    results.scenario3Fixed = {
      rate: cfg.e2eRate,
      latencyMs: fixed.latencyMs,
      statuses: fixed.statuses,
      dropped: fixed.dropped,
      maxInFlight: fixed.maxInFlight,
    };
  },
};
