import { randomUUID } from "node:crypto";
import { TOPICS } from "@crm/kafka";
import { createBusiness, signUserToken, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  canonicalJson,
  keyedEventId,
  PgIdempotencyStore,
  pruneIdempotencyKeys,
  sha256,
} from "./idempotency.ts";
import { startTestApi, type TestApi } from "./test-harness.ts";

// Idempotency as SPEC 4 on real Postgres and Kafka: replays, mismatches, races, abandoned claims, batches.
describe("idempotency", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let api: TestApi;
  let raw: TopicProbe;
  const keysUsed: string[] = [];

  beforeAll(async () => {
    raw = await new TopicProbe(env.brokers, TOPICS.raw).start();
    api = await startTestApi();
  });
  afterAll(async () => {
    await Promise.all([api?.close(), raw?.stop()]);
    await admin.end();
  });

  const newKey = (label: string) => {
    const key = `order-${label}-${randomUUID()}`;
    keysUsed.push(key);
    return key;
  };
  const eventIds = (businessId: string) =>
    raw.messages
      .filter((m) => (m.value as { business_id: string }).business_id === businessId)
      .map((m) => (m.value as { event_id: string }).event_id);

  /** Waits for a sentinel of the business, then returns every event id the business has on events.raw.v1. */
  async function settledEventIds(businessId: string, token: string): Promise<string[]> {
    const sentinel = await api.post("/v1/track", token, { type: "sentinel", business_id: businessId });
    expect(sentinel.status).toBe(202);
    await raw.waitFor((m) => (m.value as { event_id: string }).event_id === sentinel.body.event_id);
    return eventIds(businessId).filter((id) => id !== sentinel.body.event_id);
  }

  it("seed regression 3: the same Idempotency-Key twice gives {ok:true, idempotent:true} and one message", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const key = "abc123"; // verbatim from the seed; the scope (business, caller, key) keeps runs apart
    const body = { type: "purchase", business_id: businessId, props: { amount: 42 } };
    const first = await api.post("/v1/track", token, body, { "idempotency-key": key });
    const second = await api.post("/v1/track", token, body, { "idempotency-key": key });
    expect(first.status).toBe(202);
    expect(second.status).toBe(200);
    expect(second.body).toEqual({ ok: true, idempotent: true, event_id: first.body.event_id });
    expect(await settledEventIds(businessId, token)).toEqual([first.body.event_id]);
    // The key is scoped and stored hashed.
    const { rows } = await admin.query("SELECT * FROM idempotency_keys WHERE business_id = $1", [businessId]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ caller: `user:${ownerId}`, key_hash: sha256(key), state: "done" });
  });

  it("a retry right after the 202 is the replay, though the completion is written after the answer", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    // Pairs at once, so completions, claims and retries share flushes (within the user limit of 20 events/s).
    const pairs = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const key = newKey(`again-${i}`);
        const body = { type: "again", business_id: businessId, props: { i } };
        const first = await api.post("/v1/track", token, body, { "idempotency-key": key });
        const second = await api.post("/v1/track", token, body, { "idempotency-key": key });
        return { first, second };
      }),
    );
    for (const { first, second } of pairs) {
      expect(first.status).toBe(202);
      expect([second.status, second.body]).toEqual([
        200,
        { ok: true, idempotent: true, event_id: first.body.event_id },
      ]);
    }
  });

  it("props.idemKey works like the header; a different body with the same key is 422", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const key = newKey("props");
    const first = await api.post("/v1/track", token, {
      type: "a",
      business_id: businessId,
      props: { idemKey: key },
    });
    const replay = await api.post("/v1/track", token, {
      business_id: businessId,
      props: { idemKey: key },
      type: "a",
    });
    const other = await api.post("/v1/track", token, {
      type: "b",
      business_id: businessId,
      props: { idemKey: key },
    });
    const otherHeader = await api.post(
      "/v1/track",
      token,
      { type: "c", business_id: businessId },
      { "idempotency-key": key },
    );
    expect(first.status).toBe(202);
    expect(replay.body).toEqual({ ok: true, idempotent: true, event_id: first.body.event_id });
    expect([other.status, other.body.error.code]).toEqual([422, "idempotency_mismatch"]);
    expect([otherHeader.status, otherHeader.body.error.code]).toEqual([422, "idempotency_mismatch"]);
    expect(await settledEventIds(businessId, token)).toEqual([first.body.event_id]);
  });

  it("concurrent requests with one key: one event, every answer the same id or 409 with Retry-After", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const key = newKey("race");
    const body = { type: "race", business_id: businessId, contact: { email: "race@example.com" } };
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => api.post("/v1/track", token, body, { "idempotency-key": key })),
    );
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 202)).toHaveLength(1);
    expect(statuses.every((s) => [200, 202, 409].includes(s))).toBe(true);
    const ids = new Set(answers.filter((a) => a.status !== 409).map((a) => a.body.event_id));
    expect(ids.size).toBe(1);
    for (const busy of answers.filter((a) => a.status === 409)) {
      expect(busy.body.error.code).toBe("idempotency_in_flight");
      expect(Number(busy.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    }
    expect(await settledEventIds(businessId, token)).toEqual([...ids]);
  });

  it("an in-flight claim answers 409; an abandoned one (API crashed) is taken over with the same event id", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const body = { type: "crash", business_id: businessId };
    const caller = `user:${ownerId}`;
    const busyKey = newKey("busy");
    const store = new PgIdempotencyStore(api.pool, 60_000);
    await store.claim(businessId, caller, [{ key: busyKey, requestHash: sha256(canonicalJson(body)) }]);
    const busy = await api.post("/v1/track", token, body, { "idempotency-key": busyKey });
    expect([busy.status, busy.body.error.code]).toEqual([409, "idempotency_in_flight"]);
    expect(Number(busy.headers.get("retry-after"))).toBeGreaterThan(1);

    // A claim whose lease ended: the API that held it died after (or before) producing.
    const crashedKey = newKey("crashed");
    const shortLease = new PgIdempotencyStore(api.pool, 1);
    await shortLease.claim(businessId, caller, [
      { key: crashedKey, requestHash: sha256(canonicalJson(body)) },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const retry = await api.post("/v1/track", token, body, { "idempotency-key": crashedKey });
    expect(retry.status).toBe(202);
    expect(retry.body.event_id).toBe(keyedEventId(businessId, caller, crashedKey));
    const again = await api.post("/v1/track", token, body, { "idempotency-key": crashedKey });
    expect(again.body).toEqual({ ok: true, idempotent: true, event_id: retry.body.event_id });
  });

  it("the scope is (business, caller, key): another caller with the same key gets its own event", async () => {
    const member = randomUUID();
    const { businessId, ownerId } = await createBusiness(admin, { team: [member] });
    const key = newKey("scope");
    const body = { type: "scoped", business_id: businessId };
    const owner = await api.post("/v1/track", await signUserToken(env.jwtSecret, ownerId), body, {
      "idempotency-key": key,
    });
    const mate = await api.post("/v1/track", await signUserToken(env.jwtSecret, member), body, {
      "idempotency-key": key,
    });
    expect([owner.status, mate.status]).toEqual([202, 202]);
    expect(owner.body.event_id).not.toBe(mate.body.event_id);
  });

  it("batch items with keys: replayed items are idempotent, changed ones 422, unkeyed ones new", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const [k1, k2] = [newKey("b1"), newKey("b2")];
    const events = [
      { type: "one", idempotency_key: k1 },
      { type: "two", props: { idemKey: k2 } },
      { type: "three" },
    ];
    const first = await api.post("/v1/batch", token, { events });
    expect(first.status).toBe(202);
    expect(first.body.results.map((r: { ok: boolean }) => r.ok)).toEqual([true, true, true]);
    const second = await api.post("/v1/batch", token, {
      events: [...events, { type: "changed", idempotency_key: k1 }],
    });
    expect(second.body.results[0]).toEqual({
      ok: true,
      idempotent: true,
      event_id: first.body.results[0].event_id,
    });
    expect(second.body.results[1]).toEqual({
      ok: true,
      idempotent: true,
      event_id: first.body.results[1].event_id,
    });
    expect(second.body.results[2].event_id).not.toBe(first.body.results[2].event_id);
    expect(second.body.results[3]).toMatchObject({ ok: false, error: { code: "idempotency_mismatch" } });
    const ids = await settledEventIds(businessId, token);
    expect(ids.sort()).toEqual(
      [
        ...first.body.results.map((r: { event_id: string }) => r.event_id),
        second.body.results[2].event_id,
      ].sort(),
    );
  });

  it("a key twice in one batch: the first item is accepted, the second is in flight; one event", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const key = newKey("twice");
    const res = await api.post("/v1/batch", token, {
      events: [
        { type: "first", idempotency_key: key },
        { type: "first", idempotency_key: key },
        { type: "other", idempotency_key: key },
      ],
    });
    expect(res.status).toBe(202);
    expect(res.body.results[0]).toEqual({
      ok: true,
      event_id: keyedEventId(businessId, `user:${ownerId}`, key),
    });
    expect(res.body.results[1]).toMatchObject({ ok: false, error: { code: "idempotency_in_flight" } });
    expect(res.body.results[2]).toMatchObject({ ok: false, error: { code: "idempotency_mismatch" } });
    expect(await settledEventIds(businessId, token)).toEqual([res.body.results[0].event_id]);
  });

  it("records are kept at least 24 h, then pruned", async () => {
    const { businessId } = await createBusiness(admin);
    const insert = (key: string, age: string) =>
      admin.query(
        `INSERT INTO idempotency_keys (business_id, caller, key_hash, request_hash, event_id, state, lease_until, created_at)
         VALUES ($1, 'user:x', $2, 'h', gen_random_uuid(), 'done', now(), now() - $3::interval)`,
        [businessId, sha256(key), age],
      );
    await insert("young", "23 hours");
    await insert("old", "25 hours");
    await pruneIdempotencyKeys(api.pool, 1); // asks for 1 h: the database still keeps 24 h
    const { rows } = await admin.query("SELECT key_hash FROM idempotency_keys WHERE business_id = $1", [
      businessId,
    ]);
    expect(rows.map((r) => r.key_hash)).toEqual([sha256("young")]);
  });

  it("RLS: the service role sees no idempotency record without its tenant set", async () => {
    const { rows } = await api.pool.query("SELECT count(*)::int AS n FROM idempotency_keys");
    expect(rows[0].n).toBe(0);
  });

  it("logs hold no idempotency key", () => {
    const logs = api.logs.text();
    expect(logs).toContain("event_tracked");
    for (const key of keysUsed) expect(logs).not.toContain(key);
  });
});
