import { type Pool, transaction } from "@crm/db";
import type { RawEventV1 } from "@crm/schemas";

export interface ResolveResult {
  contactId: string;
  outcome: "created" | "updated" | "merged" | "unchanged" | "duplicate";
  outboxRows: number;
}

/**
 * Applies one event in one transaction with the tenant set: `app.resolve_contact` takes the advisory locks,
 * resolves or merges the contact, inserts the event row and the outbox rows (migration 003).
 */
export async function resolveContact(
  pool: Pool,
  event: RawEventV1,
  onTiming?: (tag: string, ms: number) => void,
): Promise<ResolveResult> {
  return transaction(
    pool,
    "resolve_contact",
    async (client) => {
      const { rows } = await client.query<{
        contact_id: string;
        outcome: ResolveResult["outcome"];
        outbox_rows: number;
      }>("SELECT * FROM app.resolve_contact($1, $2, $3, $4, $5, $6, $7, $8, $9)", [
        event.business_id,
        event.contact.email ?? null,
        event.contact.phone ?? null,
        event.contact.external_id ?? null,
        event.contact.name ?? null,
        event.event_id,
        event.type,
        event.props,
        event.occurred_at,
      ]);
      const row = rows[0]!;
      return { contactId: row.contact_id, outcome: row.outcome, outboxRows: row.outbox_rows };
    },
    { businessId: event.business_id, ...(onTiming ? { onTiming } : {}) },
  );
}
