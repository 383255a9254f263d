import { sleep } from "@crm/process";
import { appliedAmong, until } from "../check.ts";
import { CONFIG, say } from "../config.ts";
import type { Fault } from "../faults.ts";
import type { Harness } from "../harness.ts";
import { is2xx, isAck } from "../ledger.ts";
import type { Recovery } from "../report.ts";

/**
 * One fault under load: inject, hold, repair; then how long the API, the worker and Debezium took to recover;
 * a service that exited on its own is restarted, and the system settles before the next fault.
 */
export async function injectFault(harness: Harness, fault: Fault): Promise<void> {
  const ctx = harness.faultContext();
  harness.phase = fault.name;
  say(`fault: ${fault.name}`);
  const injectedAt = Date.now();
  const what = await fault.inject(ctx);
  if (what) harness.note(fault.name, what);
  await sleep(fault.holdMs(ctx));
  const clearingAt = Date.now();
  await fault.clear(ctx);
  const clearedAt = Date.now();
  say(`  cleared after ${((clearedAt - injectedAt) / 1000).toFixed(1)} s`);
  if (fault.apiMustRefuse) checkRefused(harness, fault, injectedAt, clearingAt);

  const recovery = await measureRecovery(harness, fault, injectedAt, clearedAt);
  harness.recoveries.set(fault.name, recovery);
  say(
    `  recovered: first 2xx +${recovery.firstAckMs ?? "timeout"} ms, applied +${recovery.appliedMs ?? "timeout"} ms, streamed +${recovery.streamedMs ?? "timeout"} ms`,
  );
  for (const service of harness.services) {
    if (!service.running) {
      harness.note(
        fault.name,
        `${service.name} had exited on its own; restarted by the harness (a supervisor's job)`,
      );
      await service.start();
    }
  }
  await sleep(CONFIG.settleMs);
}

/** No request may get a 202 while nothing can persist it. */
function checkRefused(harness: Harness, fault: Fault, injectedAt: number, clearingAt: number): void {
  // Requests sent once the fault had hold (1 s in) and answered before repair began.
  const accepted = harness.load.ledger.flatMap((e) =>
    e.attempts.filter((a) => a.status === 202 && a.at >= injectedAt + 1_000 && a.at + a.ms < clearingAt),
  );
  harness.note(fault.name, `202 answers while it could not persist: ${accepted.length} (must be 0)`);
  if (accepted.length > 0)
    harness.failures.push(`${fault.name}: ${accepted.length} requests got 202 during the outage`);
}

/**
 * From the repair: the first 2xx to a request sent after it, every event acknowledged before it applied, and
 * every outbox row written since shortly before the fault on contact.updated.v1.
 */
async function measureRecovery(
  harness: Harness,
  fault: Fault,
  injectedAt: number,
  clearedAt: number,
): Promise<Recovery> {
  const { load, admin, applied, probe } = harness;
  const firstAck = await until(
    () => load.ledger.some((e) => e.attempts.some((a) => a.at >= clearedAt && is2xx(a))),
    CONFIG.recoveryTimeoutMs,
    100,
  );
  const firstAckAt = firstAck
    ? Math.min(
        ...load.ledger.flatMap((e) =>
          e.attempts.filter((a) => a.at >= clearedAt && is2xx(a)).map((a) => a.at + a.ms),
        ),
      )
    : undefined;
  const pending = load.ledger
    .filter((e) => isAck(e) && e.ackAt <= clearedAt && !applied.has(e.eventId!))
    .map((e) => e.eventId!);
  const appliedAt = await until(
    async () => {
      const found = await appliedAmong(
        admin,
        pending.filter((id) => !applied.has(id)),
      );
      for (const id of found) applied.add(id);
      return pending.every((id) => applied.has(id));
    },
    CONFIG.recoveryTimeoutMs,
    250,
  );
  if (appliedAt === undefined) {
    const left = pending.filter((id) => !applied.has(id)).length;
    harness.note(
      fault.name,
      `${left} of ${pending.length} events acknowledged before the repair still unapplied after ${CONFIG.recoveryTimeoutMs / 1000} s (the drain checks them again)`,
    );
  }
  let streamedAt: number | undefined;
  if (appliedAt) {
    const { rows } = await admin.query<{ id: string }>(
      "SELECT id FROM outbox WHERE business_id = ANY ($1::uuid[]) AND created_at > to_timestamp($2 / 1000.0)",
      [harness.businessIds, injectedAt - 30_000],
    );
    streamedAt = await until(() => rows.every((r) => probe.has(r.id)), CONFIG.recoveryTimeoutMs, 250);
  }
  return {
    faultMs: clearedAt - injectedAt,
    firstAckMs: firstAckAt === undefined ? undefined : Math.max(0, firstAckAt - clearedAt),
    appliedMs: appliedAt === undefined ? undefined : appliedAt - clearedAt,
    streamedMs: streamedAt === undefined ? undefined : streamedAt - clearedAt,
  };
}
