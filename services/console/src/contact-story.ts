import { type Pool, transaction } from "@crm/db";
import { normalizeIdentifiers } from "@crm/identity";
import type { Viewer } from "./access.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => UUID.test(value);

export interface SearchHit {
  business_id: string;
  contact_id: string;
  /** what matched: "contact id" or an identity type */
  matched: string;
}

/**
 * Contacts matching one search string: a contact id, or any identifier, normalized as ingest normalizes it
 * (email NFKC lowercase, phone E.164 with the default country, external and anonymous ids as given). Across every
 * business for the operator, the viewer's businesses otherwise.
 */
export async function searchContacts(db: Pool, viewer: Viewer, query: string): Promise<SearchHit[]> {
  const q = query.trim();
  if (q.length === 0 || q.length > 320) return [];
  const hits: SearchHit[] = [];
  if (isUuid(q)) {
    const { rows } = await db.query<{ b: string | null }>(
      "SELECT app.console_contact_business($1, $2) AS b",
      [q, viewer.businesses],
    );
    if (rows[0]?.b) hits.push({ business_id: rows[0].b, contact_id: q.toLowerCase(), matched: "contact id" });
  }
  const pairs: [string, string][] = [];
  const add = (type: string, value: string | undefined) => {
    if (value && !pairs.some(([t, v]) => t === type && v === value)) pairs.push([type, value]);
  };
  // Each field on its own: a string that is not an email must still find an external_id.
  for (const field of ["external_id", "email", "anonymous_id"] as const) {
    add(field, normalizeIdentifiers({ [field]: q }).values[field]);
  }
  // A phone in national format means a different number in each country: try each of the viewer's businesses'.
  const { rows: countries } = await db.query<{ c: string }>("SELECT app.console_countries($1) AS c", [
    viewer.businesses,
  ]);
  for (const { c } of countries) add("phone", normalizeIdentifiers({ phone: q }, c).values.phone);
  if (pairs.length > 0) {
    const { rows } = await db.query<{ business_id: string; contact_id: string; type: string }>(
      "SELECT business_id, contact_id, type FROM app.console_find_identities($1, $2, $3)",
      [pairs.map(([t]) => t), pairs.map(([, v]) => v), viewer.businesses],
    );
    for (const row of rows) {
      if (!hits.some((hit) => hit.contact_id === row.contact_id)) {
        hits.push({ business_id: row.business_id, contact_id: row.contact_id, matched: row.type });
      }
    }
  }
  return hits;
}

export interface ContactRow {
  id: string;
  business_id: string;
  external_id: string | null;
  email: string | null;
  phone: string | null;
  name: string | null;
  traits: Record<string, unknown>;
  version: string;
  merged_into: string | null;
  first_seen_at: Date;
  last_seen_at: Date;
  created_at: Date;
  updated_at: Date;
}

export interface MergeRecord {
  /** the contact merged away into this one (directly or through a chain) */
  contact_id: string;
  /** the contact it was merged into at the time */
  into: string;
  at: Date;
  /** the event that caused it and when it happened, from the outbox row of the merge (null once pruned) */
  cause_event_id: string | null;
  cause_type: string | null;
  occurred_at: string | null;
}

export interface ContactStory {
  contact: ContactRow;
  identities: { type: string; value: string; created_at: Date }[];
  merges: MergeRecord[];
  conflicts: {
    event_id: string;
    contact_id: string;
    other_contact: string | null;
    type: string;
    value: string;
    reason: string;
    created_at: Date;
  }[];
  events: { id: string; type: string; occurred_at: Date; received_at: Date; props: unknown }[];
  /** What other parts record (segment memberships, webhook deliveries), where their tables exist: title -> rows. */
  related: { table: string; rows: Record<string, unknown>[] }[];
}

/**
 * What other parts record about a contact, read only where their tables exist (they come with the segments and
 * automations services): each is a title, the tables it needs, and its query. A query that fails (a column renamed
 * since) is skipped inside a savepoint, so the rest of the card still shows.
 */
const RELATED = [
  {
    title: "Segment memberships",
    tables: ["segment_memberships", "segment_definitions"],
    sql: `SELECT d.name AS segment, m.segment_id, m.is_member, m.changed_at, m.segment_version
          FROM segment_memberships m LEFT JOIN segment_definitions d ON d.id = m.segment_id
          WHERE m.contact_id = $1 ORDER BY m.changed_at DESC LIMIT 100`,
  },
  {
    title: "Webhook deliveries",
    tables: ["automation_messages", "automation_deliveries", "automation_endpoints"],
    sql: `SELECT m.event_type, e.url AS endpoint, d.status, d.attempts, d.last_status_code, d.created_at,
                 d.delivered_at
          FROM automation_messages m JOIN automation_deliveries d ON d.message_id = m.id
          LEFT JOIN automation_endpoints e ON e.id = d.endpoint_id
          WHERE m.contact_id = $1 ORDER BY d.created_at DESC LIMIT 100`,
  },
] as const;

/** A contact's card, read in its business's transaction (RLS); undefined when the viewer may not see it. */
export async function contactStory(
  db: Pool,
  viewer: Viewer,
  contactId: string,
): Promise<ContactStory | undefined> {
  if (!isUuid(contactId)) return undefined;
  const { rows: owner } = await db.query<{ b: string | null }>(
    "SELECT app.console_contact_business($1, $2) AS b",
    [contactId, viewer.businesses],
  );
  const businessId = owner[0]?.b;
  if (!businessId) return undefined;
  return transaction(
    db,
    "console_contact_story",
    async (client) => {
      const contact = (
        await client.query<ContactRow>(
          `SELECT id, business_id, external_id, email, phone, name, traits, version::text, merged_into,
                  first_seen_at, last_seen_at, created_at, updated_at
           FROM crm_contacts WHERE id = $1`,
          [contactId],
        )
      ).rows[0];
      if (!contact) return undefined;
      const identities = (
        await client.query(
          "SELECT type, value, created_at FROM contact_identities WHERE contact_id = $1 ORDER BY type, created_at",
          [contactId],
        )
      ).rows;
      // Every contact whose merged_into chain leads here, with the outbox row of its merge (its cause event).
      const merges = (
        await client.query<MergeRecord>(
          `WITH RECURSIVE merged AS (
             SELECT id, merged_into, updated_at, 1 AS depth FROM crm_contacts WHERE merged_into = $1
             UNION ALL
             SELECT c.id, c.merged_into, c.updated_at, m.depth + 1
             FROM crm_contacts c JOIN merged m ON c.merged_into = m.id WHERE m.depth < 20
           )
           SELECT m.id AS contact_id, m.merged_into AS "into", COALESCE(o.created_at, m.updated_at) AS at,
                  o.payload->>'cause_event_id' AS cause_event_id, e.type AS cause_type,
                  o.payload->>'occurred_at' AS occurred_at
           FROM merged m
           LEFT JOIN LATERAL (
             SELECT payload, created_at FROM outbox
             WHERE aggregateid = m.id::text AND payload->>'change' = 'merged_away'
             ORDER BY created_at DESC LIMIT 1
           ) o ON true
           LEFT JOIN crm_events e ON e.id = (o.payload->>'cause_event_id')::uuid
           ORDER BY at DESC LIMIT 100`,
          [contactId],
        )
      ).rows;
      const conflicts = (
        await client.query(
          `SELECT event_id, contact_id, other_contact, type, value, reason, created_at FROM identity_conflicts
           WHERE contact_id = $1 OR other_contact = $1 ORDER BY created_at DESC LIMIT 100`,
          [contactId],
        )
      ).rows;
      const events = (
        await client.query(
          `SELECT id, type, occurred_at, received_at, props FROM crm_events
           WHERE contact_id = $1 ORDER BY occurred_at DESC, received_at DESC LIMIT 100`,
          [contactId],
        )
      ).rows;
      const related: ContactStory["related"] = [];
      for (const part of RELATED) {
        const present = await client.query<{ ok: boolean }>(
          `SELECT bool_and(to_regclass(t) IS NOT NULL AND has_table_privilege(to_regclass(t), 'SELECT')) AS ok
           FROM unnest($1::text[]) AS t`,
          [part.tables],
        );
        if (!present.rows[0]?.ok) continue;
        await client.query("SAVEPOINT related");
        try {
          related.push({ table: part.title, rows: (await client.query(part.sql, [contactId])).rows });
          await client.query("RELEASE SAVEPOINT related");
        } catch {
          await client.query("ROLLBACK TO SAVEPOINT related");
        }
      }
      return { contact, identities, merges, conflicts, events, related };
    },
    { businessId },
  );
}
