import { randomUUID } from "node:crypto";
import { createPool, type Pool, type PoolClient, sqlLiteral, transaction, transactionOfOne } from "@crm/db";
import { TOPICS } from "@crm/kafka";
import { freePort, ServiceProcess } from "@crm/process";
import { activeSegments, createSegment, evaluateSegments } from "@crm/segment-definitions";
import { moveGroupToTopicEnd, testEnv } from "@crm/testing";

/** Starts services/segments from its entry point, in a fresh group at the end of both trigger topics. */
export async function startSegmentsService(env: Record<string, string> = {}): Promise<ServiceProcess> {
  const { brokers } = testEnv();
  const groupId = `segments-test-${randomUUID().slice(0, 8)}`;
  for (const topic of [TOPICS.contactUpdated, TOPICS.eventsApplied]) {
    await moveGroupToTopicEnd(brokers, topic, groupId);
  }
  const port = await freePort();
  const service = new ServiceProcess({
    name: "segments",
    entry: "services/segments/src/main.ts",
    env: {
      LOG_LEVEL: "info",
      SEGMENTS_PORT: String(port),
      SEGMENTS_GROUP_ID: groupId,
      SEGMENTS_SWEEP_INTERVAL_MS: "1000",
      SEGMENTS_DEFINITIONS_POLL_MS: "200",
      SEGMENTS_SESSION_TIMEOUT_MS: "6000",
      ...env,
    },
    healthUrl: `http://127.0.0.1:${port}/readyz`,
    output: "capture",
  });
  await service.start(90_000);
  return service;
}

/** The service role's pool (RLS applies), as the services use it. */
export const servicePool = (): Pool =>
  createPool({ connectionString: testEnv().databaseUrl, applicationName: "segments-test", max: 4 });

export interface TestEvent {
  type: string;
  email?: string;
  phone?: string;
  externalId?: string;
  props?: Record<string, unknown>;
  occurredAt?: Date;
  traits?: Record<string, unknown>;
}

/**
 * Applies an event as the resolver worker does (app.resolve_contact in one transaction with the tenant set):
 * the contact is resolved or merged, the event row and the outbox rows are written, and Debezium streams them
 * to events.applied.v1 and contact.updated.v1. Returns the contact it was applied to.
 */
export async function applyEvent(pool: Pool, businessId: string, event: TestEvent): Promise<string> {
  const literal = (value: string | undefined) => sqlLiteral(value ?? null);
  const { rows } = await transactionOfOne<{ contact_id: string }>(
    pool,
    "test_resolve",
    `SELECT contact_id::text FROM app.resolve_contact(${[
      `${literal(businessId)}::uuid`,
      literal(event.email),
      literal(event.phone),
      literal(event.externalId),
      "NULL",
      `${literal(randomUUID())}::uuid`,
      literal(event.type),
      `${literal(JSON.stringify(event.props ?? {}))}::jsonb`,
      `${literal((event.occurredAt ?? new Date()).toISOString())}::timestamptz`,
      "NULL",
      "NULL",
      event.traits === undefined ? "NULL" : `${literal(JSON.stringify(event.traits))}::jsonb`,
    ].join(", ")})`,
    { businessId },
  );
  return rows[0]!.contact_id;
}

/** Creates a segment through the store the management API uses; returns its id. */
export async function defineSegment(pool: Pool, businessId: string, name: string, definition: unknown) {
  const record = await transaction(
    pool,
    "test_segment",
    (client) => createSegment(client, { businessId, name, definition, changedBy: null }),
    { businessId },
  );
  return record.id;
}

/** "segment/contact" of every member now, as stored by the service. */
export async function storedMembers(pool: Pool, businessId: string): Promise<string[]> {
  return transaction(pool, "test_members", (client) => readStored(client, businessId), { businessId });
}

/** The oracle: "segment/contact" of every member of every active segment, evaluated from scratch now. */
export async function oracleMembers(pool: Pool, businessId: string): Promise<string[]> {
  return transaction(pool, "test_oracle", (client) => readOracle(client, businessId), { businessId });
}

export interface OutboxChange {
  id: string;
  segment_id: string;
  contact_id: string;
  change: "entered" | "exited";
  cause: string;
  at: string;
  segment_version: number;
}

/** The business's segment_outbox rows in commit order per contact (see readChanges). */
export async function outboxChanges(pool: Pool, businessId: string): Promise<OutboxChange[]> {
  return transaction(pool, "test_outbox", (client) => readChanges(client, businessId), { businessId });
}

/**
 * The stored members, the oracle's and the change log, all read in ONE snapshot. Read one after another, a commit
 * of the service can land between two reads: an evaluation whose snapshot predates the last event commits its
 * (then true) entry after the stored state was read and before the log is, and the two disagree though each was
 * right when read (seen once in CI with six evaluation lanes). In one snapshot, state and log are the same instant.
 */
export async function consistentState(
  pool: Pool,
  businessId: string,
): Promise<{ stored: string[]; oracle: string[]; changes: OutboxChange[] }> {
  return transaction(
    pool,
    "test_state",
    async (client) => ({
      stored: await readStored(client, businessId),
      oracle: await readOracle(client, businessId),
      changes: await readChanges(client, businessId),
    }),
    { businessId, snapshot: true },
  );
}

async function readStored(client: PoolClient, businessId: string): Promise<string[]> {
  const { rows } = await client.query<{ key: string }>(
    "SELECT segment_id || '/' || contact_id AS key FROM segment_memberships WHERE business_id = $1 AND is_member",
    [businessId],
  );
  return rows.map((r) => r.key).sort();
}

async function readOracle(client: PoolClient, businessId: string): Promise<string[]> {
  const segments = await activeSegments(client, businessId);
  if (segments.size === 0) return [];
  const rows = await evaluateSegments(client, {
    businessId,
    segments,
    targets: [...segments.keys()],
    scope: { kind: "all" },
    now: new Date(),
  });
  return rows
    .filter((r) => r.matched)
    .map((r) => `${r.segment_id}/${r.contact_id}`)
    .sort();
}

/**
 * Commit order per contact: by `at`, the clock each transaction reads once it holds the contact's lock, then
 * txid. Not by txid alone: a job takes its xid when it locks its job row, before it waits for the contacts'
 * locks, so a job that waited behind a trigger's transaction commits after it with a smaller txid.
 */
async function readChanges(client: PoolClient, businessId: string): Promise<OutboxChange[]> {
  const { rows } = await client.query<{ id: string; payload: Omit<OutboxChange, "id"> }>(
    `SELECT id::text, payload FROM segment_outbox WHERE business_id = $1
     ORDER BY (payload ->> 'at')::timestamptz, txid, created_at, id`,
    [businessId],
  );
  return rows.map((r) => ({ id: r.id, ...r.payload }));
}

/**
 * Problems of a change log against the stored state: per (segment, contact), changes must alternate starting with
 * an entry (no duplicate and no missed change), and the last one must agree with the membership now.
 */
export function changeLogProblems(changes: OutboxChange[], members: string[]): string[] {
  const last = new Map<string, string>();
  const problems: string[] = [];
  for (const c of changes) {
    const key = `${c.segment_id}/${c.contact_id}`;
    const previous = last.get(key) ?? "exited";
    if (previous === c.change) problems.push(`${key}: ${c.change} twice in a row`);
    last.set(key, c.change);
  }
  const memberSet = new Set(members);
  for (const [key, change] of last) {
    if ((change === "entered") !== memberSet.has(key))
      problems.push(`${key}: last change ${change}, member ${memberSet.has(key)}`);
  }
  for (const key of members) if (!last.has(key)) problems.push(`${key}: member without an entry`);
  return problems;
}
