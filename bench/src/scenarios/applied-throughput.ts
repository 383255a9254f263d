import type { Admin } from "@crm/kafka";
import { sleep } from "@crm/process";
import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { metricsText } from "../phase-recorder.ts";
import { fmt } from "../report.ts";
import { parseCounterTotal, slope } from "../stats.ts";

/**
 * Scenario 4, applied: more than the worker applies is offered in batches; the worker's applied counter over the
 * window is its ceiling while its lag grows (the lag slope says so).
 */
export const appliedThroughput: Scenario = {
  name: "scenario 4 throughput",
  selectedBy: [4],
  readsContactUpdates: true,
  async run(bench) {
    const { cfg } = bench;
    const updates = await bench.contactUpdates();
    const keys = bench.tenants.e2e.map((tenant) => tenant.key);
    say(`scenario 4: applied events/s with ${cfg.offeredRate} events/s offered (batches of 100)`);
    // API first: the worker's group starts at the topic's end just before the load does.
    const api = await bench.startApi("api-s4thr");
    const { worker, groupId } = await bench.startWorker("worker-s4thr");
    const points: { x: number; applied: number; lag: number; updates: number }[] = [];
    const load = await bench.phases.run("4 applied", [api, worker], async () => {
      const t0 = Date.now();
      let stop = false;
      const poll = (async () => {
        while (!stop) {
          const text = await metricsText(worker);
          points.push({
            x: (Date.now() - t0) / 1_000,
            applied: parseCounterTotal(text, "resolver_events_applied_total"),
            lag: await groupLag(bench.kafka.admin, groupId, bench.kafka.raw),
            updates: updates.messages,
          });
          await sleep(1_000);
        }
      })();
      const load = await bench.load.pacedLoad({
        keys,
        weights: keys.map(() => 1),
        rate: cfg.offeredRate / 100,
        mode: "batch",
        batchSize: 100,
      });
      stop = true;
      await poll;
      return load;
    });
    const window = points.filter((point) => point.x > cfg.warmupS && point.x <= cfg.warmupS + cfg.durationS);
    const first = window[0];
    const last = window.at(-1);
    const span = first && last ? last.x - first.x : Number.NaN;
    const applied = first && last ? (last.applied - first.applied) / span : Number.NaN;
    const lagSlope = slope(window.map((point) => ({ x: point.x, y: point.lag })));
    const updatesPerSec = first && last ? (last.updates - first.updates) / span : Number.NaN;
    const offered = (load.accepted.length * 100) / cfg.durationS;
    say(
      `  applied ${fmt(applied)} events/s (offered ${fmt(offered)} accepted), lag slope ${fmt(lagSlope)} /s`,
    );
    bench.results.scenario4Throughput = {
      offeredAcceptedPerSec: offered,
      appliedPerSec: applied,
      contactUpdatesPerSec: updatesPerSec,
      lagSlopePerSec: lagSlope,
      // Lag growing means the offer exceeded what the worker applies: the applied rate is its ceiling.
      saturated: lagSlope > 0,
      points,
      statuses: load.statuses,
    };
  },
};

/** Messages between a group's committed offsets and the ends of `topic`. */
async function groupLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [ends, committed] = await Promise.all([
    admin.fetchTopicOffsets(topic),
    admin.fetchOffsets({ groupId, topics: [topic] }),
  ]);
  const at = new Map(committed[0]?.partitions.map((p) => [p.partition, Number(p.offset)]));
  return ends.reduce(
    (lag, end) => lag + Math.max(0, Number(end.offset) - Math.max(0, at.get(end.partition) ?? 0)),
    0,
  );
}
