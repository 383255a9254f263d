import { isConnectionFailure, type Pool, sqlLiteral, transactionOfOne } from "@crm/db";
import { DependencyUnavailableError } from "@crm/errors";

/** A message the Segment listener refused on its own while its request was answered 200 (issue 15). */
export interface RejectedEvent {
  /** Deterministic for a message with a messageId, so the SDK's retry of the same batch stores it once. */
  id: string;
  businessId: string;
  source: "segment";
  messageId: string | undefined;
  /** A bounded code (metrics label): see SegmentRejection in segment-message.ts. */
  reasonCode: string;
  /** Field paths and what is wrong with them, never the values. */
  reason: string;
  /** The message as JSON text (already escaped), or a note saying why it is not kept. */
  message: string;
}

/** Where rejected messages are kept for the business's operators. */
export interface RejectedEventStore {
  /** Stores each once (by id); throws DependencyUnavailableError when the database does not take them. */
  add(events: RejectedEvent[]): Promise<void>;
}

/** Longest message text kept. */
export const MAX_REJECTED_MESSAGE_CHARS = 32 * 1024;

/** Text Postgres takes whatever it held: lone surrogates and control characters (Cc, NUL included) replaced. */
export function storableText(text: string, max = 1_024): string {
  // cut first: a cut between the halves of a surrogate pair would leave a lone one, which jsonb refuses
  return text
    .slice(0, max)
    .toWellFormed()
    .replace(/\p{Cc}/gu, "\ufffd");
}

/**
 * `rejected_events` under RLS, one statement per business (a request has one business: its write key's), values
 * as one JSON literal. A redelivered batch stores nothing twice (ON CONFLICT on the deterministic id).
 */
export class PgRejectedEventStore implements RejectedEventStore {
  constructor(private readonly pool: Pool) {}

  async add(events: RejectedEvent[]): Promise<void> {
    const byBusiness = new Map<string, RejectedEvent[]>();
    for (const event of events) {
      byBusiness.set(event.businessId, [...(byBusiness.get(event.businessId) ?? []), event]);
    }
    for (const [businessId, rows] of byBusiness) {
      const json = JSON.stringify(
        rows.map((row) => ({
          id: row.id,
          business_id: row.businessId,
          source: row.source,
          message_id: row.messageId === undefined ? null : storableText(row.messageId, 255),
          reason_code: row.reasonCode,
          reason: storableText(row.reason, 2_000),
          message: row.message.slice(0, MAX_REJECTED_MESSAGE_CHARS).toWellFormed(),
        })),
      );
      try {
        await transactionOfOne(
          this.pool,
          "rejected_events.add",
          `INSERT INTO rejected_events (id, business_id, source, message_id, reason_code, reason, message)
           SELECT id, business_id, source, message_id, reason_code, reason, message
           FROM jsonb_to_recordset(${sqlLiteral(json)}::jsonb) AS r(id uuid, business_id uuid, source text,
             message_id text, reason_code text, reason text, message text)
           ON CONFLICT (id) DO NOTHING`,
          { businessId },
        );
      } catch (error) {
        throw new DependencyUnavailableError(
          "postgres",
          isConnectionFailure(error) ? "rejected events not stored" : "rejected events refused",
          { cause: error },
        );
      }
    }
  }
}

/** Deletes rejected messages older than the retention (the database keeps at least one day). */
export async function pruneRejectedEvents(pool: Pool, retentionDays: number): Promise<number> {
  const { rows } = await pool.query<{ pruned: number }>(
    "SELECT app.prune_rejected_events(make_interval(days => $1)) AS pruned",
    [Math.max(1, retentionDays)],
  );
  return rows[0]?.pruned ?? 0;
}
