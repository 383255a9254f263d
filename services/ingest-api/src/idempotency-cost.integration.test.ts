import { randomUUID } from "node:crypto";
import { createBusiness, signUserToken, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgIdempotencyStore } from "./idempotency.ts";
import { startTestApi, type TestApi } from "./test-harness.ts";

/** A plan node as auto_explain's JSON format writes it (the fields read here). */
interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  Plans?: PlanNode[];
}

/**
 * The idempotency store's connections, watched from both ends: every message the client sends (round trips) and the
 * statements in it, and every statement the server executes for it, nested ones included (auto_explain, loaded into
 * each session and reporting to the client as notices), with the rows each plan node read. The sessions start as the
 * admin role, which alone may load auto_explain, then become the service role, so RLS applies as in production.
 */
function watchedPool(url: string) {
  const pool = new pg.Pool({ connectionString: url, max: 4, application_name: "idempotency-cost-test" });
  const seen = { roundTrips: 0, statements: 0, plans: [] as { query: string; plan: PlanNode }[] };
  const ready = new WeakSet<pg.PoolClient>();
  const watch = async (client: pg.PoolClient) => {
    if (ready.has(client)) return client;
    ready.add(client);
    await client.query(`LOAD 'auto_explain';
      SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
      SET auto_explain.log_analyze = on; SET auto_explain.log_timing = off; SET auto_explain.log_format = json;
      SET auto_explain.log_level = notice; SET client_min_messages = notice;
      SET SESSION AUTHORIZATION crm_service`);
    client.on("notice", (notice) => {
      const text = notice.message ?? "";
      if (!text.includes("plan:")) return;
      const explained = JSON.parse(text.slice(text.indexOf("{"))) as { "Query Text": string; Plan: PlanNode };
      seen.plans.push({ query: explained["Query Text"], plan: explained.Plan });
    });
    // Both forms pg uses: promise (transaction helpers) and callback (pool.query).
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
    client.query = ((...args: unknown[]) => {
      const callback =
        typeof args.at(-1) === "function" ? (args.pop() as (...a: unknown[]) => void) : undefined;
      const answered = query(...args).then((result) => {
        seen.roundTrips += 1;
        seen.statements += Array.isArray(result) ? result.length : 1;
        return result;
      });
      if (!callback) return answered;
      answered.then((result) => callback(undefined, result), callback);
      return undefined;
    }) as typeof client.query;
    return client;
  };
  const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
  pool.connect = ((callback?: (error?: Error, client?: pg.PoolClient, release?: () => void) => void) => {
    const watched = connect().then(watch);
    if (!callback) return watched;
    watched.then((client) => callback(undefined, client, () => client.release()), callback);
    return undefined;
  }) as typeof pool.connect;
  return { pool, seen };
}

/** Rows the plan's scans read from `relation`: returned, or read and then discarded by a filter or a recheck. */
function rowsRead(node: PlanNode, relation: string): number {
  const scanned = node["Node Type"].endsWith("Scan") && node["Relation Name"] === relation;
  const own = scanned
    ? ((node["Actual Rows"] ?? 0) +
        (node["Rows Removed by Filter"] ?? 0) +
        (node["Rows Removed by Index Recheck"] ?? 0)) *
      (node["Actual Loops"] ?? 1)
    : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + rowsRead(child, relation), 0);
}

// Issue 13.1: a batch whose every item is keyed costs a bounded number of statements whatever its size, and each
// statement reads only the records of its keys, however many records the caller already has.
describe("idempotency cost", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const watched = watchedPool(env.adminUrl);
  const store = new PgIdempotencyStore(watched.pool, 15_000);
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi({
      idempotency: store,
      limits: { userPerSecond: 100_000, keyPerSecond: () => 100_000 },
    });
  });
  afterAll(async () => {
    await api?.close();
    await Promise.all([watched.pool.end(), admin.end()]);
  });

  async function keyedBatch(token: string, keys: string[]) {
    watched.seen.roundTrips = 0;
    watched.seen.statements = 0;
    watched.seen.plans = [];
    const res = await api.post("/v1/batch", token, {
      events: keys.map((key, i) => ({ type: "cost", idempotency_key: key, props: { i } })),
    });
    expect(res.status).toBe(202);
    // What the request itself waited for; its completion goes after the answer (drain waits for it).
    const answered = { roundTrips: watched.seen.roundTrips, statements: watched.seen.statements };
    await store.drain();
    const { roundTrips, statements, plans } = watched.seen;
    return {
      answered,
      results: res.body.results as { ok: boolean; idempotent?: true }[],
      roundTrips,
      statements,
      serverStatements: plans.length,
      rowsRead: plans.reduce((sum, p) => sum + rowsRead(p.plan, "idempotency_keys"), 0),
    };
  }

  it("a keyed batch of 5 and one of 400 cost the same statements, and read only their own records", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    // Earlier records of the same caller, with no ANALYZE since: what a lookup filtering the caller's keys (the
    // old `key_hash = ANY (...)` on a (business, caller, key_hash) key) would have read on every statement.
    await admin.query(
      `INSERT INTO idempotency_keys (business_id, caller, key_hash, request_hash, event_id, state, lease_until)
       SELECT $1, $2, md5(g::text), 'h', gen_random_uuid(), 'done', now() FROM generate_series(1, 3000) g`,
      [businessId, `user:${ownerId}`],
    );
    const keys = (n: number) => Array.from({ length: n }, () => `cost-${randomUUID()}`);
    const small = await keyedBatch(token, keys(5));
    const largeKeys = keys(400);
    const large = await keyedBatch(token, largeKeys);
    const replayed = await keyedBatch(token, largeKeys);

    const figures = (cost: typeof small) => ({ ...cost, results: cost.results.length });
    console.info("keyed batch cost:", [small, large, replayed].map(figures));
    expect(small.results.every((r) => r.ok && !r.idempotent)).toBe(true);
    expect(large.results.every((r) => r.ok && !r.idempotent)).toBe(true);
    expect(replayed.results.every((r) => r.ok && r.idempotent)).toBe(true);
    const shape = (cost: typeof small) => [cost.roundTrips, cost.statements, cost.serverStatements];
    // The request waits for its claims: one statement in its own transaction, whatever the batch's size.
    expect(small.answered).toEqual({ roundTrips: 1, statements: 1 });
    expect(large.answered).toEqual(small.answered);
    // Then its completion, after the answer (alone here: no later claim to ride on): one statement more.
    expect([small.roundTrips, small.statements]).toEqual([2, 2]);
    expect(shape(large)).toEqual(shape(small));
    // A replay claims (finding every key done) and sends nothing: the same one statement, no completion.
    expect(replayed.answered).toEqual(small.answered);
    expect(replayed.roundTrips).toBe(1);
    expect(replayed.serverStatements).toBeLessThan(small.serverStatements);
    // Each record is read once to be marked done, and once more to answer the replay, never the caller's others.
    expect(small.rowsRead).toBeLessThanOrEqual(5);
    expect(large.rowsRead).toBeLessThanOrEqual(400);
    expect(replayed.rowsRead).toBeLessThanOrEqual(400);
  });

  it("a completion rides on the next claim's statement; alone it waits for the linger or a drain", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const caller = `user:${ownerId}`;
    const lingering = new PgIdempotencyStore(watched.pool, 15_000, { completionLingerMs: 60_000 });
    watched.seen.roundTrips = 0;
    const [first] = await lingering.claim(businessId, caller, [{ key: "k1", requestHash: "h1" }]);
    expect(first).toMatchObject({ kind: "claimed" });
    const eventId = (first as { eventId: string }).eventId;
    let completed = false;
    const completion = lingering.complete(businessId, caller, [eventId]).then(() => {
      completed = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Nothing sent for the completion yet: it waits for company.
    expect([watched.seen.roundTrips, completed]).toEqual([1, false]);
    // The retry of k1 and a new key: one statement, which marks k1 done before it claims, so the retry is a replay.
    const outcomes = await lingering.claim(businessId, caller, [
      { key: "k1", requestHash: "h1" },
      { key: "k2", requestHash: "h2" },
    ]);
    await completion;
    expect(outcomes.map((o) => o.kind)).toEqual(["replay", "claimed"]);
    expect(watched.seen.roundTrips).toBe(2);
    // A lone completion goes at once when the store drains (before a shutdown).
    void lingering.complete(businessId, caller, [(outcomes[1] as { eventId: string }).eventId]);
    await lingering.drain();
    expect(watched.seen.roundTrips).toBe(3);
    const { rows } = await admin.query(
      "SELECT state FROM idempotency_keys WHERE business_id = $1 ORDER BY state",
      [businessId],
    );
    expect(rows.map((row) => row.state)).toEqual(["done", "done"]);
  });
});
