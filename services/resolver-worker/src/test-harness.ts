import { randomUUID } from "node:crypto";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { partitionKey } from "@crm/identity";
import { createKafka, ensureTopics } from "@crm/kafka";
import type { RawEventV1 } from "@crm/schemas";
import {
  consumerGroupAtTopicEnd,
  eventually,
  freePort,
  type RunningService,
  startService,
} from "@crm/testing";
import type pg from "pg";

// Test support for the resolver worker: private topics and consumer groups, raw events, and the order-independent
// view of the identity state that the tests compare.

export interface WorkerTopics {
  topic: string;
  dlqTopic: string;
  groupId: string;
}

/** A raw topic (12 partitions by default), a DLQ topic and a consumer group that no other test uses. */
export async function createWorkerTopics(brokers: string[], partitions = 12): Promise<WorkerTopics> {
  const suffix = randomUUID().slice(0, 8);
  const names = {
    topic: `events.raw.v1.test-${suffix}`,
    dlqTopic: `events.dlq.v1.test-${suffix}`,
    groupId: `resolver-worker-test-${suffix}`,
  };
  const admin = createKafka({ brokers, clientId: "resolver-test-admin" }).admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [
      { topic: names.topic, numPartitions: partitions },
      { topic: names.dlqTopic, numPartitions: partitions },
    ]);
    // Leaders can lag the creation a little: wait until every partition answers offset requests.
    await eventually("test topics have leaders", async () => {
      await admin.fetchTopicOffsets(names.topic);
      await admin.fetchTopicOffsets(names.dlqTopic);
      return true;
    });
  } finally {
    await admin.disconnect();
  }
  return names;
}

/**
 * A private consumer group on a topic others write to (the shared events.raw.v1), starting at the topic's current
 * end: the worker sees what the test causes, not the topic's history.
 */
export async function groupAtTopicEnd(brokers: string[], topic: string): Promise<WorkerTopics> {
  const groupId = await consumerGroupAtTopicEnd(brokers, topic, "resolver-worker-test");
  const names = { topic, dlqTopic: `events.dlq.v1.test-${groupId.slice(-8)}`, groupId };
  const admin = createKafka({ brokers, clientId: "resolver-test-admin" }).admin();
  await admin.connect();
  try {
    // its own DLQ too: whatever it dead-letters from the shared topic stays out of the shared DLQ
    await ensureTopics(admin, [{ topic: names.dlqTopic, numPartitions: 1 }]);
  } finally {
    await admin.disconnect();
  }
  return names;
}

/** Deletes the topics of a test (best effort: a stack without topic deletion keeps them). */
export async function dropWorkerTopics(brokers: string[], topics: WorkerTopics): Promise<void> {
  const admin = createKafka({ brokers, clientId: "resolver-test-admin" }).admin();
  await admin.connect();
  const own = [topics.topic, topics.dlqTopic].filter((topic) => topic.includes(".test-"));
  await admin.deleteTopics({ topics: own }).catch(() => {});
  await admin.deleteGroups([topics.groupId]).catch(() => {});
  await admin.disconnect();
}

/** The group's committed offset of every partition of its topic (-1: nothing committed). */
export async function committedOffsets(
  brokers: string[],
  topics: WorkerTopics,
): Promise<Map<number, bigint>> {
  const admin = createKafka({ brokers, clientId: "resolver-test-admin" }).admin();
  await admin.connect();
  try {
    const [offsets] = await admin.fetchOffsets({ groupId: topics.groupId, topics: [topics.topic] });
    return new Map(offsets!.partitions.map(({ partition, offset }) => [partition, BigInt(offset)]));
  } finally {
    await admin.disconnect();
  }
}

/** The end offset (next offset to be written) of every partition of `topic`. */
export async function endOffsets(brokers: string[], topic: string): Promise<Map<number, bigint>> {
  const admin = createKafka({ brokers, clientId: "resolver-test-admin" }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return new Map(offsets.map(({ partition, offset }) => [partition, BigInt(offset)]));
  } finally {
    await admin.disconnect();
  }
}

/**
 * A TCP proxy between one worker and the shared Postgres, so a test can take the database away from that worker
 * alone (stopping the stack's Postgres would fail every other test running): `stop()` refuses new connections
 * and cuts the open ones, which is what a stopped or unreachable server looks like from the worker; `start()`
 * brings it back on the same port. `cutConnectionsSending(marker)` cuts every connection whose client sends
 * `marker`: one event's statement loses its connection each time while the database answers everything else.
 */
export class PostgresProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private marker: Buffer | undefined;
  private port = 0;

  constructor(private readonly databaseUrl: string) {}

  /** `databaseUrl` pointed at the proxy. */
  get url(): string {
    const url = new URL(this.databaseUrl);
    url.hostname = "127.0.0.1";
    url.port = String(this.port);
    return url.toString();
  }

  async start(): Promise<this> {
    const target = new URL(this.databaseUrl);
    const server = createServer((client) => {
      const upstream = netConnect(Number(target.port || 5432), target.hostname);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => {});
      }
      client.on("data", (chunk: Buffer) => {
        if (this.marker && chunk.includes(this.marker)) {
          client.destroy();
          upstream.destroy();
        } else {
          upstream.write(chunk);
        }
      });
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    this.port = typeof address === "object" && address ? address.port : this.port;
    this.server = server;
    return this;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }

  cutConnectionsSending(marker: string | undefined): void {
    this.marker = marker === undefined ? undefined : Buffer.from(marker);
  }
}

/** Spawns the real worker (`src/main.ts`) on the test's topics and waits until it has joined its group. */
export async function startWorker(
  topics: WorkerTopics,
  env: Record<string, string> = {},
): Promise<RunningService> {
  const port = await freePort();
  return startService({
    entry: "services/resolver-worker/src/main.ts",
    env: {
      WORKER_PORT: String(port),
      WORKER_TOPIC: topics.topic,
      WORKER_DLQ_TOPIC: topics.dlqTopic,
      WORKER_GROUP_ID: topics.groupId,
      WORKER_COMMIT_INTERVAL_MS: "500",
      // a killed instance's partitions move after 10 s instead of 30 s
      WORKER_SESSION_TIMEOUT_MS: "10000",
      ...env,
    },
    healthUrl: `http://127.0.0.1:${port}/readyz`,
  });
}

export type Contact = RawEventV1["contact"];

/** An events.raw.v1 value as ingest-api would produce it. */
export function rawEvent(
  businessId: string,
  contact: Contact,
  options: { type?: string; occurredAt?: Date; eventId?: string; props?: Record<string, unknown> } = {},
): RawEventV1 {
  const now = new Date().toISOString();
  return {
    event_id: options.eventId ?? randomUUID(),
    business_id: businessId,
    type: options.type ?? "test",
    contact,
    props: options.props ?? {},
    occurred_at: (options.occurredAt ?? new Date()).toISOString(),
    received_at: now,
    source: { kind: "ingest_key", id_hash: "test" },
  };
}

/** Produces raw events (or raw bytes) the way ingest-api does: key = partitionKey(), acks=all. */
export class RawEventProducer {
  private readonly producer;

  constructor(brokers: string[]) {
    this.producer = createKafka({ brokers, clientId: "resolver-test-producer" }).producer();
  }

  async connect(): Promise<this> {
    await this.producer.connect();
    return this;
  }

  /** `partition` overrides the key's partition (to spread one key's events over partitions on purpose). */
  async send(topic: string, events: RawEventV1[], partition?: (index: number) => number): Promise<void> {
    for (let start = 0; start < events.length; start += 500) {
      await this.producer.send({
        topic,
        acks: -1,
        messages: events.slice(start, start + 500).map((event, offset) => ({
          key: partitionKey(event.business_id, event.contact, event.event_id),
          value: JSON.stringify(event),
          ...(partition ? { partition: partition(start + offset) } : {}),
        })),
      });
    }
  }

  async sendBytes(topic: string, message: { key: string; value: Buffer | string; partition: number }) {
    await this.producer.send({ topic, acks: -1, messages: [message] });
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }
}

const identifiers = (contact: Contact): string[] =>
  (["external_id", "email", "phone"] as const).flatMap((type) =>
    contact[type] ? [`${type}:${contact[type]}`] : [],
  );

/** A canonical, order-independent form of a partition of identifiers into contacts. */
function canonical(groups: Iterable<Iterable<string>>): string[] {
  return [...groups].map((group) => [...group].sort().join(" ")).sort();
}

/**
 * The identity state any serial order of `events` must end in when no event joins two external_ids: the
 * connected components of "appear in one event" (union-find). Returned canonical, as `identityGroups` is.
 */
export function expectedGroups(events: RawEventV1[]): string[] {
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let root = x;
    while (parent.get(root) !== root) root = parent.get(root)!;
    parent.set(x, root);
    return root;
  };
  for (const event of events) {
    const ids = identifiers(event.contact);
    for (const id of ids) if (!parent.has(id)) parent.set(id, id);
    for (const id of ids.slice(1)) parent.set(find(id), find(ids[0]!));
  }
  const groups = new Map<string, string[]>();
  for (const id of parent.keys()) {
    const root = find(id);
    groups.set(root, [...(groups.get(root) ?? []), id]);
  }
  return canonical(groups.values());
}

export interface ContactSummary {
  /** The identifiers of the contact, canonical. */
  ids: string;
  name: string | null;
  firstSeen: number;
  lastSeen: number;
  events: number;
}

/**
 * What every live contact must look like after `events` in any order (ids grouped as `expectedGroups`; name of
 * the latest event that had one; first/last seen; event count), sorted by ids. Needs distinct occurred_at.
 */
export function expectedContacts(events: RawEventV1[]): ContactSummary[] {
  const groups = expectedGroups(events).map((ids) => ({ ids, set: new Set(ids.split(" ")) }));
  const summaries = new Map<string, ContactSummary & { nameAt: number }>();
  for (const event of events) {
    const first = identifiers(event.contact)[0];
    if (!first) continue;
    const { ids } = groups.find((group) => group.set.has(first))!;
    const at = Date.parse(event.occurred_at);
    const summary = summaries.get(ids) ?? {
      ids,
      name: null,
      nameAt: Number.NEGATIVE_INFINITY,
      firstSeen: at,
      lastSeen: at,
      events: 0,
    };
    summary.events++;
    summary.firstSeen = Math.min(summary.firstSeen, at);
    summary.lastSeen = Math.max(summary.lastSeen, at);
    if (event.contact.name !== undefined && at > summary.nameAt) {
      summary.name = event.contact.name;
      summary.nameAt = at;
    }
    summaries.set(ids, summary);
  }
  return [...summaries.values()]
    .map(({ nameAt: _, ...summary }) => summary)
    .sort((a, b) => a.ids.localeCompare(b.ids));
}

/** The live contacts of a business in the shape of `expectedContacts`. */
export async function actualContacts(admin: pg.Pool, businessId: string): Promise<ContactSummary[]> {
  const { rows } = await admin.query<{
    ids: string[] | null;
    name: string | null;
    first_seen_at: Date;
    last_seen_at: Date;
    events: number;
  }>(
    `SELECT (SELECT array_agg(i.type || ':' || i.value) FROM contact_identities i WHERE i.contact_id = c.id) AS ids,
            c.name, c.first_seen_at, c.last_seen_at,
            (SELECT count(*)::int FROM crm_events e WHERE e.contact_id = c.id) AS events
     FROM crm_contacts c WHERE c.business_id = $1 AND c.merged_into IS NULL`,
    [businessId],
  );
  return rows
    .map((row) => ({
      ids: [...(row.ids ?? [])].sort().join(" "),
      name: row.name,
      firstSeen: row.first_seen_at.getTime(),
      lastSeen: row.last_seen_at.getTime(),
      events: row.events,
    }))
    .sort((a, b) => a.ids.localeCompare(b.ids));
}

/**
 * A load of events about `persons` people with overlapping identifier sets (external_id for every other person,
 * two emails, two phones), in shuffled order with distinct occurred_at, so keys (and partitions) differ between
 * events of one person and late events are common. No event joins two people: the expected state is known.
 */
export function overlappingLoad(businessId: string, persons: number, eventsPerPerson: number): RawEventV1[] {
  const events: RawEventV1[] = [];
  const base = Date.now() - 86_400_000;
  const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!;
  for (let person = 0; person < persons; person++) {
    const emails = [`p${person}a@load.test`, `p${person}b@load.test`];
    const phones = [2 * person, 2 * person + 1].map((n) => `+1555${String(n).padStart(7, "0")}`);
    for (let j = 0; j < eventsPerPerson; j++) {
      const contact: Contact = {};
      if (person % 2 === 0 && Math.random() < 0.4) contact.external_id = `acct_${person}`;
      if (Math.random() < 0.7) contact.email = pick(emails);
      if (Math.random() < 0.6 || Object.keys(contact).length === 0) contact.phone = pick(phones);
      if (Math.random() < 0.5) contact.name = `Person ${person} v${j}`;
      events.push(rawEvent(businessId, contact));
    }
  }
  // production order and occurred_at order are two independent shuffles: many events arrive late
  const times = shuffle(events.map((_, i) => base + i * 7));
  shuffle(events);
  return events.map((event, i) => ({ ...event, occurred_at: new Date(times[i]!).toISOString() }));
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** How a business's identities are grouped into contacts, canonical. */
export async function identityGroups(admin: pg.Pool, businessId: string): Promise<string[]> {
  const { rows } = await admin.query<{ ids: string[] }>(
    `SELECT array_agg(type || ':' || value) AS ids FROM contact_identities WHERE business_id = $1
     GROUP BY contact_id`,
    [businessId],
  );
  return canonical(rows.map((row) => row.ids));
}

/**
 * Everything that must hold in any business at rest, whatever happened: every identity on a live contact, no
 * contact with two external_ids, contact.external_id equal to its identity, and for every contact exactly one
 * outbox row per version (1..version): a change applied twice or lost would break the sequence.
 */
/**
 * SPEC 7's invariants over one business or several at once (one scan of the outbox for many businesses: the
 * outbox has no index on aggregateid, and on a long-lived dev database it holds many rows).
 */
export async function invariantViolations(admin: pg.Pool, businessIds: string | string[]): Promise<string[]> {
  const problems: string[] = [];
  const checks: [string, string][] = [
    [
      "identity on a merged contact",
      `SELECT i.value FROM contact_identities i JOIN crm_contacts c ON c.id = i.contact_id
       WHERE i.business_id = ANY ($1::uuid[]) AND c.merged_into IS NOT NULL`,
    ],
    [
      "event on a merged contact",
      `SELECT e.id FROM crm_events e JOIN crm_contacts c ON c.id = e.contact_id
       WHERE e.business_id = ANY ($1::uuid[]) AND c.merged_into IS NOT NULL`,
    ],
    [
      "contact with two external_ids",
      `SELECT contact_id FROM contact_identities WHERE business_id = ANY ($1::uuid[]) AND type = 'external_id'
       GROUP BY contact_id HAVING count(*) > 1`,
    ],
    [
      "external_id column differs from its identity",
      `SELECT c.id FROM crm_contacts c
       LEFT JOIN contact_identities i ON i.contact_id = c.id AND i.type = 'external_id'
       WHERE c.business_id = ANY ($1::uuid[]) AND c.merged_into IS NULL AND c.external_id IS DISTINCT FROM i.value`,
    ],
    [
      "outbox rows do not match versions 1..version",
      `SELECT c.id FROM crm_contacts c LEFT JOIN outbox o ON o.aggregateid = c.id::text
       WHERE c.business_id = ANY ($1::uuid[]) GROUP BY c.id, c.version
       HAVING count(o.id) <> c.version
           OR count(DISTINCT (o.payload->>'version')::int) <> c.version
           OR max((o.payload->>'version')::int) <> c.version`,
    ],
  ];
  for (const [what, sql] of checks) {
    const { rows } = await admin.query(sql, [[businessIds].flat()]);
    if (rows.length > 0) problems.push(`${what}: ${rows.length}`);
  }
  return problems;
}

/** `histogram_quantile` over a Prometheus text exposition (linear within the bucket, as Prometheus does). */
export function histogramQuantile(texts: string[], metric: string, q: number): number {
  const buckets = new Map<number, number>();
  for (const text of texts) {
    for (const match of text.matchAll(new RegExp(`^${metric}_bucket\\{le="([^"]+)"\\} (\\S+)$`, "gm"))) {
      const le = match[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(match[1]);
      buckets.set(le, (buckets.get(le) ?? 0) + Number(match[2]));
    }
  }
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total === 0) return Number.NaN;
  const rank = q * total;
  let previousLe = 0;
  let previousCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return previousLe;
      return previousLe + (le - previousLe) * ((rank - previousCount) / (count - previousCount || 1));
    }
    previousLe = le;
    previousCount = count;
  }
  return previousLe;
}
