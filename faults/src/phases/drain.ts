import { TOPICS } from "@crm/kafka";
import { appliedAmong, consumerLag, type LiveState, readLiveState, slotLagBytes, until } from "../check.ts";
import { say, startedAt } from "../config.ts";
import type { Harness } from "../harness.ts";
import { isAck, type LedgerEntry } from "../ledger.ts";

/** The state once the load stopped and everything acknowledged was applied and streamed (or the bounds passed). */
export interface Drained {
  acked: (LedgerEntry & { eventId: string; ackAt: number })[];
  live: LiveState;
  /** The worker group's committed lag: reported, not enforced (see below). */
  committedLag: number | undefined;
  slotLag: number | undefined;
}

/** Stops the load (keyed retries finish), then waits for every acknowledged event to be applied and streamed. */
export async function drain(harness: Harness): Promise<Drained> {
  const { load, admin, applied, probe, brokers, failures } = harness;
  harness.phase = "drain";
  say("stopping the load; keyed retries finish");
  await load.stop();
  const acked = load.ledger.filter(isAck);
  say(`draining: ${acked.length} acknowledged events`);
  const drained = await until(
    async () => {
      const found = await appliedAmong(
        admin,
        acked.map((e) => e.eventId).filter((id) => !applied.has(id)),
      );
      for (const id of found) applied.add(id);
      return acked.every((e) => applied.has(e.eventId));
    },
    120_000,
    500,
  );
  if (!drained) failures.push("not every acknowledged event was applied within 120 s of the load stopping");
  // Committed-offset lag is reported, not enforced: kafkajs keeps committing to a group coordinator that moved
  // (tulios/kafkajs#1779), so a worker can apply everything while its commits fail until the next rebalance.
  let committedLag: number | undefined;
  await until(
    async () => {
      committedLag = await consumerLag(brokers, "resolver-worker", TOPICS.raw);
      return committedLag === 0;
    },
    30_000,
    500,
  );
  const live = await readLiveState(admin, harness.runId, harness.businessIds);
  const streamed = await until(() => live.outbox.every((o) => probe.has(o.id)), 60_000, 500);
  if (!streamed) failures.push("outbox rows not all on contact.updated.v1 within 60 s");
  const slotLag = await slotLagBytes(admin);
  say(`drained in ${((Date.now() - startedAt) / 1000).toFixed(0)} s; checking the ledger`);
  return { acked, live, committedLag, slotLag };
}
