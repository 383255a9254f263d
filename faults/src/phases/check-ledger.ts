import { migrate } from "@crm/infra/migrate";
import { TOPICS } from "@crm/kafka";
import { applyOrder, dlqSize, replay } from "../check.ts";
import {
  compareDeliveries,
  comparePartitions,
  identityPartition,
  ledgerFindings,
  lostAcks,
} from "../compare.ts";
import { say } from "../config.ts";
import type { Harness } from "../harness.ts";
import { type PhaseReport, totalRow } from "../report.ts";
import type { Drained } from "./drain.ts";

/** One invariant of the run: its name, whether it held, and the figure behind it. */
export type Invariant = [name: string, ok: boolean, detail: string];

export interface LedgerCheck {
  phases: PhaseReport[];
  total: PhaseReport;
  invariants: Invariant[];
  /** Events/s of the serial replay: the raw limit of resolve_contact on this machine, in the same run. */
  replayEventsPerSec: number;
}

/**
 * The client's ledger against the database and the topic, per phase; then the live identity partition against a
 * serial replay, in commit order, on a fresh database (faults/README.md). Broken invariants go to the failures.
 */
export async function checkLedger(harness: Harness, drained: Drained): Promise<LedgerCheck> {
  const { load, probe, admin, env, failures } = harness;
  const { live } = drained;
  const counts = ledgerFindings(load.ledger, live.applied);
  const deliveries = compareDeliveries(
    live.outbox.map((o) => o.id),
    probe.deliveries.map((d) => d.id),
  );
  const phaseOfReq = new Map(load.ledger.map((e) => [e.req, e.phase]));
  const dupByPhase = new Map<string, number>();
  for (const o of live.outbox) {
    const extra = deliveries.duplicates.get(o.id);
    if (!extra) continue;
    const name = (o.causeReq !== undefined && phaseOfReq.get(o.causeReq)) || "unknown";
    dupByPhase.set(name, (dupByPhase.get(name) ?? 0) + extra);
  }
  const phases: PhaseReport[] = counts.map((c) => ({
    ...c,
    notStarted: load.skippedByPhase.get(c.phase) ?? 0,
    duplicateMessages: dupByPhase.get(c.phase) ?? 0,
    recovery: harness.recoveries.get(c.phase),
    notes: harness.notes.get(c.phase) ?? [],
  }));
  const total = totalRow(phases);

  const runEvents = new Set(live.applied.map((e) => e.eventId));
  const order = (await applyOrder(admin)).filter((id) => runEvents.has(id));
  if (order.length !== runEvents.size || new Set(order).size !== order.length) {
    failures.push(`commit log has ${order.length} event inserts for ${runEvents.size} event rows`);
  }
  await admin.query("DROP DATABASE IF EXISTS crm_replay WITH (FORCE)");
  await admin.query("CREATE DATABASE crm_replay");
  const replayUrl = env.DATABASE_ADMIN_URL!.replace(/\/crm(\?|$)/, "/crm_replay$1");
  await migrate(
    {
      DATABASE_ADMIN_URL: replayUrl,
      DATABASE_URL: env.DATABASE_URL!,
      DEBEZIUM_DATABASE_URL: env.DEBEZIUM_DATABASE_URL!,
    },
    () => {},
  );
  say(`replaying ${order.length} events one by one in commit order on a fresh database`);
  const replayed = await replay(admin, replayUrl, order, harness.businessIds);
  const partitionDiff = comparePartitions(
    identityPartition(live.identities),
    identityPartition(replayed.identities),
  );
  const dlq = await dlqSize(harness.brokers);

  const lost = lostAcks(load.ledger, live.applied);
  const invariants: Invariant[] = [
    [
      "acknowledged-but-lost = 0",
      total.ackLost === 0,
      `${total.ackLost}${
        lost.length
          ? ` (e.g. req ${lost
              .slice(0, 5)
              .map((e) => e.req)
              .join(", ")})`
          : ""
      }`,
    ],
    ["duplicate effects = 0", total.duplicateEffects === 0, String(total.duplicateEffects)],
    ["identities unique", live.duplicateIdentities === 0, `${live.duplicateIdentities} duplicated`],
    [
      "no contact with two external_ids",
      live.contactsWithTwoExternalIds === 0,
      `${live.contactsWithTwoExternalIds} contacts`,
    ],
    [
      "every outbox row on contact.updated.v1",
      deliveries.missing.length === 0,
      `${deliveries.missing.length} missing of ${live.outbox.length}`,
    ],
    [
      "no message without an outbox row",
      deliveries.unknown.length === 0,
      `${deliveries.unknown.length} unknown`,
    ],
    [
      "resolution = serial replay in commit order",
      partitionDiff.onlyLive.length === 0 && partitionDiff.onlyReplay.length === 0,
      `${identityPartition(live.identities).size} businesses, ${partitionDiff.onlyLive.length} groups only live, ${partitionDiff.onlyReplay.length} only in replay${partitionDiff.onlyLive.length ? `; e.g. ${partitionDiff.onlyLive.slice(0, 2).join(" / ")} vs ${partitionDiff.onlyReplay.slice(0, 2).join(" / ")}` : ""}`,
    ],
    ["nothing dead-lettered", dlq === 0, `${dlq ?? "unreadable"} on ${TOPICS.dlq}`],
  ];
  for (const [name, ok, detail] of invariants) if (!ok) failures.push(`${name}: ${detail}`);
  return { phases, total, invariants, replayEventsPerSec: replayed.eventsPerSec };
}
