import { createKafka, headerString, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import pg from "pg";
import type { AppliedEvent, IdentityRow } from "./compare.ts";

/**
 * Every delivery on contact.updated.v1 of the private cluster, read from the beginning for the whole run: the
 * outbox `id` header of each message, and when it arrived (for the streaming recovery time).
 */
export class DeliveryProbe {
  readonly deliveries: { id: string; at: number }[] = [];
  private readonly seen = new Set<string>();
  private consumer: ReturnType<ReturnType<typeof createKafka>["consumer"]> | undefined;

  constructor(
    private readonly brokers: string[],
    /** Only these businesses' messages count (a kept stack holds earlier runs too). */
    private readonly businessIds: Set<string>,
  ) {}

  async start(): Promise<void> {
    const kafka = createKafka({ brokers: this.brokers, clientId: "faults-probe" });
    const consumer = kafka.consumer({
      groupId: `faults-probe-${Date.now()}`,
      maxWaitTimeInMs: 100,
      // Broker faults are expected: keep retrying instead of crashing the probe.
      retry: { retries: 1_000, initialRetryTime: 300, maxRetryTime: 2_000 },
    });
    this.consumer = consumer;
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.contactUpdated, fromBeginning: true });
    await consumer.run({
      autoCommit: true,
      eachMessage: async ({ message }) => {
        const id = headerString(message.headers, "id");
        const businessId = headerString(message.headers, "business_id");
        if (!id || !businessId || !this.businessIds.has(businessId)) return;
        this.deliveries.push({ id, at: Date.now() });
        this.seen.add(id);
      },
    });
  }

  has(id: string): boolean {
    return this.seen.has(id);
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect().catch(() => {});
  }
}

/** Which of `eventIds` have a crm_events row (admin connection: RLS does not hide rows from the checker). */
export async function appliedAmong(admin: pg.Pool, eventIds: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < eventIds.length; i += 5_000) {
    const { rows } = await admin.query<{ id: string }>(
      "SELECT id FROM crm_events WHERE id = ANY ($1::uuid[])",
      [eventIds.slice(i, i + 5_000)],
    );
    for (const row of rows) found.add(row.id);
  }
  return found;
}

/** Polls until `done()` holds; returns when (Date.now()), or undefined after `timeoutMs`. */
export function until(
  done: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 250,
): Promise<number | undefined> {
  return poll("a recovery condition", async () => (await done()) && Date.now(), {
    timeoutMs,
    intervalMs: everyMs,
    throwOnTimeout: false,
  });
}

/** Sum over partitions of (end offset - committed offset) of `groupId` on `topic`; undefined when unreadable. */
export async function consumerLag(
  brokers: string[],
  groupId: string,
  topic: string,
): Promise<number | undefined> {
  const admin = createKafka({ brokers, clientId: "faults-lag" }).admin();
  try {
    await admin.connect();
    const [ends, [committed]] = await Promise.all([
      admin.fetchTopicOffsets(topic),
      admin.fetchOffsets({ groupId, topics: [topic] }),
    ]);
    let lag = 0;
    for (const { partition, high } of ends) {
      const offset = committed?.partitions.find((p) => p.partition === partition)?.offset ?? "-1";
      lag += Number(high) - Math.max(0, Number(offset));
    }
    return lag;
  } catch {
    return undefined;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** Messages on a topic (sum of end offsets; the private cluster's topics start at offset 0). */
export async function topicSize(brokers: string[], topic: string): Promise<number | undefined> {
  const admin = createKafka({ brokers, clientId: "faults-size" }).admin();
  try {
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(topic);
    return ends.reduce((sum, { high, low }) => sum + Number(high) - Number(low), 0);
  } catch {
    return undefined;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

// ---- the order the database applied events in ----

const ORDER_SLOT = "faults_apply_order";

/**
 * A logical replication slot (test_decoding) created before the load: it keeps, in commit order, every
 * transaction of the run, so the checker learns the exact order in which crm_events rows were committed.
 */
export async function startApplyOrderLog(admin: pg.Pool): Promise<void> {
  await admin.query(
    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
    [ORDER_SLOT],
  );
  await admin.query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [ORDER_SLOT]);
}

/** Event ids in the order their transactions committed (read once: consuming the slot drops it). */
export async function applyOrder(admin: pg.Pool): Promise<string[]> {
  const { rows } = await admin.query<{ data: string }>(
    `SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL, 'include-xids', '0')
     WHERE data LIKE 'table public.crm_events: INSERT:%'`,
    [ORDER_SLOT],
  );
  await admin.query("SELECT pg_drop_replication_slot($1)", [ORDER_SLOT]);
  const ids: string[] = [];
  for (const { data } of rows) {
    const match = /\bid\[uuid\]:'([0-9a-f-]{36})'/.exec(data);
    if (match) ids.push(match[1]!);
  }
  return ids;
}

// ---- reading the live database ----

export interface LiveState {
  applied: (AppliedEvent & { businessId: string })[];
  identities: IdentityRow[];
  /** (business, type, value) owned by more than one contact: must be none. */
  duplicateIdentities: number;
  /** Contacts holding two or more external_ids: must be none. */
  contactsWithTwoExternalIds: number;
  outbox: { id: string; causeReq: number | undefined }[];
}

export async function readLiveState(admin: pg.Pool, run: string, businessIds: string[]): Promise<LiveState> {
  const events = await admin.query<{ id: string; business_id: string; req: string | null }>(
    "SELECT id, business_id, props->>'req' AS req FROM crm_events WHERE props->>'run' = $1",
    [run],
  );
  const identities = await admin.query<{
    business_id: string;
    contact_id: string;
    type: string;
    value: string;
  }>(
    "SELECT business_id, contact_id, type, value FROM contact_identities WHERE business_id = ANY ($1::uuid[])",
    [businessIds],
  );
  const duplicates = await admin.query<{ n: string }>(
    `SELECT count(*) AS n FROM (SELECT 1 FROM contact_identities GROUP BY business_id, type, value
     HAVING count(*) > 1) d`,
  );
  const twoExt = await admin.query<{ n: string }>(
    `SELECT count(*) AS n FROM (SELECT 1 FROM contact_identities WHERE type = 'external_id'
     GROUP BY contact_id HAVING count(*) > 1) d`,
  );
  const outbox = await admin.query<{ id: string; req: string | null }>(
    `SELECT o.id, e.props->>'req' AS req FROM outbox o
     LEFT JOIN crm_events e ON e.id = (o.payload->>'cause_event_id')::uuid
     WHERE o.business_id = ANY ($1::uuid[])`,
    [businessIds],
  );
  const num = (value: string | null) => (value === null ? undefined : Number(value));
  return {
    applied: events.rows.map((r) => ({ eventId: r.id, businessId: r.business_id, req: num(r.req) })),
    identities: identities.rows.map((r) => ({
      businessId: r.business_id,
      contactId: r.contact_id,
      type: r.type,
      value: r.value,
    })),
    duplicateIdentities: Number(duplicates.rows[0]!.n),
    contactsWithTwoExternalIds: Number(twoExt.rows[0]!.n),
    outbox: outbox.rows.map((r) => ({ id: r.id, causeReq: num(r.req) })),
  };
}

// ---- replay on a fresh database ----

interface ReplayRow {
  id: string;
  business_id: string;
  type: string;
  props: unknown;
  contact: { external_id?: string; email?: string; phone?: string; name?: string };
  occurred_at: Date;
}

/**
 * Replays `order` (event ids, in the live commit order) one by one through `app.resolve_contact` in `replayUrl`
 * (a freshly migrated database holding the same businesses), each in its own transaction, and returns the
 * replay's identities and how many events per second the serial replay managed (the machine's raw limit for
 * the resolve transaction, to compare the offered load against).
 */
export async function replay(
  admin: pg.Pool,
  replayUrl: string,
  order: string[],
  businessIds: string[],
): Promise<{ identities: IdentityRow[]; eventsPerSec: number }> {
  const target = new pg.Client({ connectionString: replayUrl, application_name: "faults-replay" });
  await target.connect();
  try {
    const businesses = await admin.query(
      "SELECT id, name, owner_id, plan, default_country, junk_values FROM businesses WHERE id = ANY ($1::uuid[])",
      [businessIds],
    );
    for (const b of businesses.rows) {
      await target.query(
        `INSERT INTO businesses (id, name, owner_id, plan, default_country, junk_values)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING`,
        [b.id, b.name, b.owner_id, b.plan, b.default_country, b.junk_values],
      );
    }
    await target.query(
      `CREATE TABLE faults_replay_input (seq int PRIMARY KEY, id uuid, business_id uuid, type text, props jsonb,
       email text, phone text, ext text, name text, occurred_at timestamptz)`,
    );
    for (let i = 0; i < order.length; i += 5_000) {
      const ids = order.slice(i, i + 5_000);
      const { rows } = await admin.query<ReplayRow>(
        "SELECT id, business_id, type, props, contact, occurred_at FROM crm_events WHERE id = ANY ($1::uuid[])",
        [ids],
      );
      const byId = new Map(rows.map((r) => [r.id, r]));
      const batch = ids.map((id) => byId.get(id)!).filter(Boolean);
      await target.query(
        `INSERT INTO faults_replay_input
         SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $10::timestamptz[])`,
        [
          batch.map((_, j) => i + j),
          batch.map((r) => r.id),
          batch.map((r) => r.business_id),
          batch.map((r) => r.type),
          batch.map((r) => JSON.stringify(r.props)),
          batch.map((r) => r.contact.email ?? null),
          batch.map((r) => r.contact.phone ?? null),
          batch.map((r) => r.contact.external_id ?? null),
          batch.map((r) => r.contact.name ?? null),
          batch.map((r) => r.occurred_at),
        ],
      );
    }
    const started = performance.now();
    // One transaction per event, as the worker runs them (COMMIT inside DO needs a top-level statement).
    await target.query("SET synchronous_commit = off");
    await target.query(`DO $$
      DECLARE r record;
      BEGIN
        FOR r IN SELECT * FROM faults_replay_input ORDER BY seq LOOP
          PERFORM set_config('app.business_id', r.business_id::text, true);
          PERFORM * FROM app.resolve_contact(r.business_id, r.email, r.phone, r.ext, r.name, r.id, r.type,
                                             r.props, r.occurred_at);
          COMMIT;
        END LOOP;
      END $$`);
    const seconds = (performance.now() - started) / 1000;
    const { rows } = await target.query<{
      business_id: string;
      contact_id: string;
      type: string;
      value: string;
    }>("SELECT business_id, contact_id, type, value FROM contact_identities");
    return {
      identities: rows.map((r) => ({
        businessId: r.business_id,
        contactId: r.contact_id,
        type: r.type,
        value: r.value,
      })),
      eventsPerSec: order.length / Math.max(seconds, 0.001),
    };
  } finally {
    await target.end();
  }
}

/** Messages dead-lettered by the workers (an acknowledged event there was not applied). */
export async function dlqSize(brokers: string[]): Promise<number | undefined> {
  return topicSize(brokers, TOPICS.dlq);
}

/** WAL bytes the Debezium slot has not confirmed yet (the checker's own slot excluded). */
export async function slotLagBytes(admin: pg.Pool): Promise<number | undefined> {
  const { rows } = await admin.query<{ lag: string | null }>(
    `SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))::text AS lag
     FROM pg_replication_slots WHERE slot_name <> $1`,
    [ORDER_SLOT],
  );
  return rows[0]?.lag === null || rows[0]?.lag === undefined ? undefined : Number(rows[0].lag);
}
