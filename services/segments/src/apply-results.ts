import type { PoolClient } from "@crm/db";
import { topicValidator } from "@crm/schema-registry";
import type { SegmentMembershipV1 } from "@crm/schemas";
import type { EvaluationRow } from "@crm/segment-definitions";

// The published contract, checked where the message is made (strict: no undeclared field reaches the topic).
const validateChange = topicValidator<SegmentMembershipV1>("segment.membership.v1");

/** What asked for an evaluation; published as the change's `cause`. */
export type Cause = "event" | "contact" | "merge" | "time" | "backfill" | "edit" | "archive";

export interface ChangeCause {
  cause: Cause;
  /** The applied event that triggered it (cause "event"). */
  eventId?: string;
}

export interface ApplyOutcome {
  evaluated: number;
  entered: number;
  exited: number;
}

/**
 * Writes evaluation results of one business against the stored state, in the caller's transaction (which holds
 * the contacts' locks): a result that differs from the stored membership is an entry or exit, written to
 * segment_memberships AND as one segment_outbox row in the same transaction; a row is kept while the contact is a
 * member or has a time to be looked at again (next_check), and removed otherwise. Results equal to the state
 * write nothing, so evaluating a contact again (a redelivered trigger, a resumed backfill page) publishes nothing.
 */
export async function applyResults(
  client: PoolClient,
  input: {
    businessId: string;
    rows: EvaluationRow[];
    versions: ReadonlyMap<string, number>;
    now: Date;
    causeOf: (contactId: string) => ChangeCause;
  },
): Promise<ApplyOutcome> {
  const outcome: ApplyOutcome = { evaluated: input.rows.length, entered: 0, exited: 0 };
  if (input.rows.length === 0) return outcome;
  const contacts = [...new Set(input.rows.map((r) => r.contact_id))];
  const segmentIds = [...new Set(input.rows.map((r) => r.segment_id))];
  const { rows: stored } = await client.query<{
    segment_id: string;
    contact_id: string;
    is_member: boolean;
    segment_version: number;
    next_check_at: Date | null;
  }>(
    `SELECT segment_id::text, contact_id::text, is_member, segment_version, next_check_at FROM segment_memberships
     WHERE business_id = $1 AND contact_id = ANY($2::uuid[]) AND segment_id = ANY($3::uuid[])`,
    [input.businessId, contacts, segmentIds],
  );
  const byKey = new Map(stored.map((row) => [`${row.segment_id}/${row.contact_id}`, row]));

  const upsert = { segment: [] as string[], contact: [] as string[], member: [] as boolean[] };
  const upsertMore = { version: [] as number[], next: [] as (string | null)[] };
  const remove = { segment: [] as string[], contact: [] as string[] };
  const outbox = { contact: [] as string[], type: [] as string[], payload: [] as string[] };
  const at = input.now.toISOString();
  for (const row of input.rows) {
    const before = byKey.get(`${row.segment_id}/${row.contact_id}`);
    const wasMember = before?.is_member ?? false;
    const version = input.versions.get(row.segment_id) ?? before?.segment_version ?? 1;
    const changed = wasMember !== row.matched;
    if (changed) {
      const change = row.matched ? "entered" : "exited";
      const cause = input.causeOf(row.contact_id);
      outbox.contact.push(row.contact_id);
      outbox.type.push(`segment.${change}`);
      const value: SegmentMembershipV1 = {
        business_id: input.businessId,
        segment_id: row.segment_id,
        segment_version: version,
        contact_id: row.contact_id,
        change,
        at,
        cause: cause.cause,
        ...(cause.eventId ? { cause_event_id: cause.eventId } : {}),
      };
      const checked = validateChange(value);
      if (!checked.ok) throw new Error(`segment.membership.v1 value refused: ${checked.errors.join("; ")}`);
      outbox.payload.push(JSON.stringify(value));
      if (row.matched) outcome.entered++;
      else outcome.exited++;
    }
    const keep = row.matched || row.next_check !== null;
    if (!keep) {
      if (before) {
        remove.segment.push(row.segment_id);
        remove.contact.push(row.contact_id);
      }
      continue;
    }
    const next = row.next_check?.toISOString() ?? null;
    const same =
      before &&
      !changed &&
      before.segment_version === version &&
      (before.next_check_at?.toISOString() ?? null) === next;
    if (same) continue;
    upsert.segment.push(row.segment_id);
    upsert.contact.push(row.contact_id);
    upsert.member.push(row.matched);
    upsertMore.version.push(version);
    upsertMore.next.push(next);
  }
  if (remove.segment.length + upsert.segment.length + outbox.contact.length > 0) {
    // One statement (one round trip) for the three writes; the rows each touches are disjoint.
    await client.query(
      `WITH removed AS (
         DELETE FROM segment_memberships m USING unnest($2::uuid[], $3::uuid[]) AS r(segment_id, contact_id)
         WHERE m.business_id = $1 AND m.segment_id = r.segment_id AND m.contact_id = r.contact_id RETURNING 1
       ), upserted AS (
         INSERT INTO segment_memberships AS m
           (business_id, segment_id, contact_id, is_member, segment_version, changed_at, evaluated_at, next_check_at)
         SELECT $1, r.segment_id, r.contact_id, r.is_member, r.version, $9, $9, r.next_check
         FROM unnest($4::uuid[], $5::uuid[], $6::boolean[], $7::int[], $8::timestamptz[])
           AS r(segment_id, contact_id, is_member, version, next_check)
         ON CONFLICT (segment_id, contact_id) DO UPDATE SET
           is_member = EXCLUDED.is_member, segment_version = EXCLUDED.segment_version,
           changed_at = CASE WHEN m.is_member <> EXCLUDED.is_member THEN EXCLUDED.changed_at ELSE m.changed_at END,
           evaluated_at = EXCLUDED.evaluated_at, next_check_at = EXCLUDED.next_check_at
         RETURNING 1
       ), published AS (
         INSERT INTO segment_outbox (aggregateid, type, payload, business_id, contact_id)
         SELECT r.contact_id, r.type, r.payload, $1, r.contact_id::uuid
         FROM unnest($10::text[], $11::text[], $12::jsonb[]) AS r(contact_id, type, payload)
         RETURNING 1
       )
       SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM upserted) + (SELECT count(*) FROM published)
         AS written`,
      [
        input.businessId,
        remove.segment,
        remove.contact,
        upsert.segment,
        upsert.contact,
        upsert.member,
        upsertMore.version,
        upsertMore.next,
        at,
        outbox.contact,
        outbox.type,
        outbox.payload,
      ],
    );
  }
  return outcome;
}

/**
 * Takes the segments service's lock of each contact (transaction-scoped advisory locks, in one order so two
 * transactions never wait on each other in a cycle). Every writer of a contact's memberships holds it, so results
 * are written in the order they were computed, each from a snapshot taken after the previous writer committed.
 */
export async function lockContacts(client: PoolClient, contactIds: readonly string[]): Promise<void> {
  const sorted = [...new Set(contactIds)].sort();
  await client.query(
    `SELECT count(pg_advisory_xact_lock(k)) FROM (
       SELECT hashtextextended('segments:' || id, 0) AS k FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n)
       ORDER BY n) s`,
    [sorted],
  );
}
