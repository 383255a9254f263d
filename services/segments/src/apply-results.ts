import { createHash } from "node:crypto";
import { type PoolClient, type QueryResult, sqlLiteral } from "@crm/db";
import type { EvaluationQuery } from "@crm/segment-definitions";

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

/** Where a change's cause comes from: per contact (triggers), else `fallback`. */
export interface Causes {
  byContact?: ReadonlyMap<string, ChangeCause>;
  fallback: ChangeCause;
}

const CAUSES = new Set<Cause>(["event", "contact", "merge", "time", "backfill", "edit", "archive"]);

/**
 * Evaluates and writes in ONE statement, in the caller's transaction (which holds the contacts' locks): `results`
 * is a query of EvaluationRow columns (the compiled evaluation, or fixed rows), its parameters first. A result
 * that differs from the stored membership is an entry or exit, written to segment_memberships AND as one
 * segment_outbox row (the segment.membership.v1 value, built here in SQL from fixed keys); a row is kept while the
 * contact is a member or has a time to be looked at again (next_check), and removed otherwise. Results equal to
 * the state write nothing, so evaluating a contact again (a redelivered trigger, a resumed backfill page)
 * publishes nothing. Nothing but three counts comes back to the service: the results never leave Postgres.
 */
export async function applyResults(
  client: PoolClient,
  input: {
    businessId: string;
    results: EvaluationQuery;
    versions: ReadonlyMap<string, number>;
    now: Date;
    causes: Causes;
  },
): Promise<ApplyOutcome> {
  const values = [...input.results.values];
  const param = (value: unknown, type: string) => {
    values.push(value);
    return `$${values.length}::${type}`;
  };
  const cause = (c: ChangeCause) => {
    // The cause is published: only the closed list (the schema's enum) reaches the statement.
    if (!CAUSES.has(c.cause)) throw new Error(`not a membership cause: ${String(c.cause)}`);
    return c;
  };
  const byContact = [...(input.causes.byContact ?? new Map<string, ChangeCause>())].map(
    ([id, c]) => [id, cause(c)] as const,
  );
  const fallback = cause(input.causes.fallback);
  const business = param(input.businessId, "uuid");
  const at = param(input.now.toISOString(), "timestamptz");
  const atText = param(input.now.toISOString(), "text");
  const versionIds = param([...input.versions.keys()], "text[]");
  const versionNumbers = param([...input.versions.values()], "int[]");
  const causeIds = param(
    byContact.map(([id]) => id),
    "text[]",
  );
  const causeKinds = param(
    byContact.map(([, c]) => c.cause),
    "text[]",
  );
  const causeEvents = param(
    byContact.map(([, c]) => c.eventId ?? null),
    "text[]",
  );
  const text = `WITH r AS (${input.results.text}
     ), stored AS MATERIALIZED (
       -- The stored rows of the evaluated contacts, read once through the contact index (an InitPlan array, so
       -- the plan is an index scan whatever the generic plan guesses), then hash-joined to the results: a probe
       -- of the primary key per (contact, segment) was most of an evaluation's cost (2,500 probes for 50
       -- contacts x 50 segments), and a plain join to the table scanned the business's memberships (9 s for 66).
       SELECT s.segment_id, s.contact_id, s.is_member, s.segment_version, s.next_check_at FROM segment_memberships s
       WHERE s.business_id = ${business}
         AND s.contact_id = ANY (ARRAY(SELECT DISTINCT r.contact_id::uuid FROM r))
     ), v AS MATERIALIZED (
       SELECT r.contact_id::uuid AS contact_id, r.segment_id::uuid AS segment_id, r.matched, r.next_check,
              coalesce(d.version, s.segment_version, 1) AS version, coalesce(s.is_member, false) AS was,
              s.segment_version AS stored_version, s.next_check_at AS stored_next, s.segment_id IS NOT NULL AS stored,
              coalesce(k.cause, ${param(fallback.cause, "text")}) AS cause,
              CASE WHEN k.contact_id IS NULL THEN ${param(fallback.eventId ?? null, "text")} ELSE k.event_id END AS event_id
       FROM r
       LEFT JOIN unnest(${versionIds}, ${versionNumbers}) AS d(segment_id, version) ON d.segment_id = r.segment_id
       LEFT JOIN unnest(${causeIds}, ${causeKinds}, ${causeEvents}) AS k(contact_id, cause, event_id)
         ON k.contact_id = r.contact_id
       LEFT JOIN stored s ON s.segment_id = r.segment_id::uuid AND s.contact_id = r.contact_id::uuid
     ), removed AS (
       DELETE FROM segment_memberships m USING v
       WHERE v.stored AND NOT v.matched AND v.next_check IS NULL
         AND m.business_id = ${business} AND m.segment_id = v.segment_id AND m.contact_id = v.contact_id
     ), upserted AS (
       INSERT INTO segment_memberships AS m
         (business_id, segment_id, contact_id, is_member, segment_version, changed_at, evaluated_at, next_check_at)
       SELECT ${business}, v.segment_id, v.contact_id, v.matched, v.version, ${at}, ${at}, v.next_check FROM v
       WHERE (v.matched OR v.next_check IS NOT NULL)
         AND NOT (v.stored AND v.was = v.matched AND v.stored_version = v.version
                  AND v.stored_next IS NOT DISTINCT FROM v.next_check)
       ON CONFLICT (segment_id, contact_id) DO UPDATE SET
         is_member = EXCLUDED.is_member, segment_version = EXCLUDED.segment_version,
         changed_at = CASE WHEN m.is_member <> EXCLUDED.is_member THEN EXCLUDED.changed_at ELSE m.changed_at END,
         evaluated_at = EXCLUDED.evaluated_at, next_check_at = EXCLUDED.next_check_at
     ), published AS (
       INSERT INTO segment_outbox (aggregateid, type, payload, business_id, contact_id)
       SELECT v.contact_id::text, 'segment.' || c.change,
              jsonb_build_object('business_id', ${business}, 'segment_id', v.segment_id, 'segment_version', v.version,
                                 'contact_id', v.contact_id, 'change', c.change, 'at', ${atText}, 'cause', v.cause)
              || CASE WHEN v.event_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('cause_event_id', v.event_id) END,
              ${business}, v.contact_id
       FROM v CROSS JOIN LATERAL (SELECT CASE WHEN v.matched THEN 'entered' ELSE 'exited' END AS change) c
       WHERE v.was <> v.matched
       RETURNING type
     )
     SELECT (SELECT count(*) FROM v)::int AS evaluated,
            (SELECT count(*) FROM published WHERE type = 'segment.entered')::int AS entered,
            (SELECT count(*) FROM published WHERE type = 'segment.exited')::int AS exited`;
  // A named statement: each connection plans a given rule set once (planning is most of a small evaluation's
  // cost), then runs it with new values. Same text = same rules, targets and scope kind.
  const name = `segments_${createHash("sha256").update(text).digest("hex").slice(0, 24)}`;
  const { rows } = await client.query<ApplyOutcome>({ name, text, values });
  const { evaluated, entered, exited } = rows[0]!;
  return { evaluated, entered, exited };
}

/** Fixed results: every contact of `contactIds` out of `segmentId` with nothing to look at again (an archive). */
export function exitAll(contactIds: readonly string[], segmentId: string): EvaluationQuery {
  return {
    text: `SELECT u.id AS contact_id, $2::text AS segment_id, false AS matched, NULL::timestamptz AS next_check
           FROM unnest($1::text[]) AS u(id)`,
    values: [contactIds, segmentId],
  };
}

/**
 * Takes the segments service's lock of each contact (`app.lock_segment_contacts`, infra/sql/40_segments.sql:
 * transaction-scoped advisory locks in one order, the same function erasure takes them with). Every writer of a
 * contact's memberships holds it, so results are written in the order they were computed, each from a snapshot
 * taken after the previous writer committed.
 * `then`, a statement without parameters, runs in the same message right after the locks are held (its own
 * snapshot, taken after them): its first row is returned. One round trip for both.
 */
export async function lockContacts(
  client: PoolClient,
  contactIds: readonly string[],
  then?: string,
): Promise<Record<string, unknown> | undefined> {
  const ids =
    contactIds.length === 0 ? "ARRAY[]::text[]" : `ARRAY[${contactIds.map(sqlLiteral).join(", ")}]::text[]`;
  const lock = `SELECT app.lock_segment_contacts(${ids})`;
  if (!then) {
    await client.query(lock);
    return undefined;
  }
  const results = (await client.query(`${lock}; ${then}`)) as unknown as QueryResult[];
  return results[1]!.rows[0];
}
