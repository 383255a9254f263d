import { type Pool, transaction } from "@crm/db";
import type { RawEventV1 } from "@crm/schemas";

export interface ResolveResult {
  contactId: string;
  outcome: "created" | "updated" | "merged" | "unchanged" | "duplicate";
  outboxRows: number;
  /** Contacts merged away into `contactId` by this event. */
  merged: number;
  /** Links or merges refused because they would give one contact two external_ids. */
  conflicts: number;
  /** Time spent waiting for the identifier advisory locks, measured inside Postgres. */
  lockWaitMs: number;
  /** Time the locks were held: from the last lock taken until COMMIT returned. */
  lockHoldMs: number;
  /** Wall time of the whole transaction as the worker saw it. */
  transactionMs: number;
}

interface ResolveRow {
  contact_id: string;
  outcome: ResolveResult["outcome"];
  outbox_rows: number;
  merged: number;
  conflicts: number;
  lock_wait_ms: number;
  locked_ms: number;
}

/**
 * Applies one event in one transaction with the tenant set: `app.resolve_contact` takes the advisory locks,
 * resolves or merges the contact, inserts the event row and the outbox rows (migrations 004/005).
 */
export async function resolveContact(pool: Pool, event: RawEventV1): Promise<ResolveResult> {
  const started = performance.now();
  let returned = 0;
  const row = await transaction(
    pool,
    "resolve_contact",
    async (client) => {
      const { rows } = await client.query<ResolveRow>(
        "SELECT * FROM app.resolve_contact($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
          event.business_id,
          event.contact.email ?? null,
          event.contact.phone ?? null,
          event.contact.external_id ?? null,
          event.contact.name ?? null,
          event.event_id,
          event.type,
          event.props,
          event.occurred_at,
        ],
      );
      returned = performance.now();
      return rows[0]!;
    },
    { businessId: event.business_id },
  );
  const committed = performance.now();
  return {
    contactId: row.contact_id,
    outcome: row.outcome,
    outboxRows: row.outbox_rows,
    merged: row.merged,
    conflicts: row.conflicts,
    lockWaitMs: row.lock_wait_ms,
    lockHoldMs: row.locked_ms + (committed - returned),
    transactionMs: committed - started,
  };
}
