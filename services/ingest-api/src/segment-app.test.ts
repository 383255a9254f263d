import { randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { createLogger } from "@crm/logger";
import { describe, expect, it } from "vitest";
import { hashIngestKey } from "./auth.ts";
import { createMetrics } from "./metrics.ts";
import type { RejectedEvent, RejectedEventStore } from "./rejected-events.ts";
import { createSegmentApp } from "./segment-app.ts";
import type { BusinessAccess, TenantDirectory } from "./tenant-directory.ts";
import { FakeProducer, MemoryIdempotency } from "./test-fakes.ts";

// The Segment-compatible listener with in-memory fakes: Segment's statuses, the mapping of each call, messageId as
// idempotency key, rejected messages kept while the batch answers 200.
const ONE = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const TWO = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
const newKey = () => `ik_${randomBytes(32).toString("base64url")}`;
const KEY_ONE = newKey();
const KEY_TWO = newKey();

class KeyDirectory implements TenantDirectory {
  async businessesOfUser(): Promise<BusinessAccess[]> {
    return [];
  }
  async businessOfKey(hash: string) {
    const businessId =
      hash === hashIngestKey(KEY_ONE) ? ONE : hash === hashIngestKey(KEY_TWO) ? TWO : undefined;
    return businessId && { businessId, plan: "standard", defaultCountry: "US", keyId: `key-${businessId}` };
  }
}

class MemoryRejected implements RejectedEventStore {
  rows = new Map<string, RejectedEvent>();
  async add(events: RejectedEvent[]) {
    for (const event of events) if (!this.rows.has(event.id)) this.rows.set(event.id, event);
  }
}

function setup(options: { inFlightWaitMs?: number } = {}) {
  const producer = new FakeProducer();
  const idempotency = new MemoryIdempotency();
  const rejected = new MemoryRejected();
  const metrics = createMetrics();
  const app = createSegmentApp({
    producer,
    directory: new KeyDirectory(),
    idempotency,
    rejected,
    metrics,
    jwt: { secret: "unit-test-secret-0123456789abcdef", audience: "authenticated", algorithms: ["HS256"] },
    logger: createLogger("unit", { level: "silent" }),
    logHashSecret: "unit-log-hash-secret-0123456789",
    ...options,
  });
  const post = async (
    path: string,
    body: unknown,
    { key = KEY_ONE as string | null, headers = {} as Record<string, string>, gzip = false } = {},
  ) => {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    const res = await app.request(path, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(key === null ? {} : { authorization: `Basic ${Buffer.from(`${key}:`).toString("base64")}` }),
        ...(gzip ? { "content-encoding": "gzip" } : {}),
        ...headers,
      },
      body: gzip ? gzipSync(text) : text,
    });
    // biome-ignore lint/suspicious/noExplicitAny: assertions read the answer field by field
    return { status: res.status, headers: res.headers, body: (await res.json()) as any };
  };
  return { app, producer, idempotency, rejected, metrics, post };
}

const at = "2026-11-27T10:00:00.000Z";

describe("Segment-compatible listener", () => {
  it("maps track, identify, page, screen, group and alias onto track bodies", async () => {
    const { post, producer } = setup();
    const context = {
      ip: "203.0.113.9",
      userAgent: "ua/1",
      library: { name: "analytics-node", version: "3.1.0" },
    };
    const res = await post("/v1/batch", {
      batch: [
        {
          type: "track",
          event: "Order Completed",
          userId: "u1",
          properties: { total: 9 },
          timestamp: at,
          context,
          messageId: "m1",
        },
        {
          type: "identify",
          userId: "u1",
          anonymousId: "a1",
          traits: {
            email: "Alice@Example.com",
            phone: "+1 555 123 4567",
            firstName: "Alice",
            lastName: "Liddell",
            plan: "pro",
          },
          timestamp: at,
          messageId: "m2",
        },
        {
          type: "page",
          anonymousId: "a1",
          name: "Pricing",
          category: "Docs",
          properties: { path: "/pricing" },
          timestamp: at,
        },
        { type: "screen", userId: "u1", name: "Home", timestamp: at },
        { type: "group", userId: "u1", groupId: "g1", traits: { plan: "team" }, timestamp: at },
        { type: "alias", userId: "u1", previousId: "a0", timestamp: at },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ success: true, accepted: 6, replayed: 0, rejected: [] });
    const events = producer.events();
    expect(events.map((e) => e.type)).toEqual([
      "Order Completed",
      "identify",
      "page_viewed",
      "screen_viewed",
      "group",
      "alias",
    ]);
    expect(events.every((e) => e.business_id === ONE && e.occurred_at === at)).toBe(true);
    expect(events[0]!.props).toEqual({
      total: 9,
      segment_context: {
        message_id: "m1",
        ip: "203.0.113.9",
        user_agent: "ua/1",
        library: { name: "analytics-node", version: "3.1.0" },
      },
    });
    expect(events[0]!.contact).toEqual({ external_id: "u1" });
    expect(events[1]!.contact).toEqual({
      external_id: "u1",
      anonymous_id: "a1",
      email: "alice@example.com",
      phone: "+15551234567",
      name: "Alice Liddell",
      traits: {
        email: "Alice@Example.com",
        phone: "+1 555 123 4567",
        firstName: "Alice",
        lastName: "Liddell",
        plan: "pro",
      },
    });
    expect(events[2]!.props).toMatchObject({ path: "/pricing", name: "Pricing", category: "Docs" });
    expect(events[2]!.contact).toEqual({ anonymous_id: "a1" });
    expect(events[4]!.props).toMatchObject({ group_id: "g1", group_traits: { plan: "team" } });
    expect(events[5]!.contact).toEqual({ external_id: "u1", previous_id: "a0" });
  });

  it("takes the type from the path on single calls and the write key from the body (analytics-node 2.x)", async () => {
    const { post, producer } = setup();
    const res = await post(
      "/v1/identify",
      { userId: "u2", traits: { name: "Bob" }, writeKey: KEY_ONE },
      { key: null },
    );
    expect(res.status).toBe(200);
    expect(producer.events()[0]).toMatchObject({
      type: "identify",
      contact: { external_id: "u2", name: "Bob" },
    });
  });

  it("applies Segment's timestamp rules", async () => {
    const { post, producer } = setup();
    const before = Date.now();
    await post("/v1/batch", {
      sentAt: "2026-11-27T10:00:10.000Z",
      batch: [
        // the sender's clock is 10 s ahead of... its own sentAt: the event happened 10 s before receipt
        { type: "track", event: "a", userId: "u", originalTimestamp: "2026-11-27T10:00:00.000Z" },
        {
          type: "track",
          event: "b",
          userId: "u",
          originalTimestamp: "2026-11-27T10:00:00.000Z",
          sentAt: "2026-11-27T10:00:04.000Z",
        },
        { type: "track", event: "c", userId: "u", timestamp: at, originalTimestamp: "2000-01-01T00:00:00Z" },
        { type: "track", event: "d", userId: "u" },
      ],
    });
    const after = Date.now();
    const [a, b, c, d] = producer.events().map((e) => Date.parse(e.occurred_at));
    expect(a).toBeGreaterThanOrEqual(before - 10_000 - 1);
    expect(a).toBeLessThanOrEqual(after - 10_000);
    expect(b).toBeGreaterThanOrEqual(before - 4_000 - 1);
    expect(b).toBeLessThanOrEqual(after - 4_000);
    expect(c).toBe(Date.parse(at));
    expect(d).toBeGreaterThanOrEqual(before - 1);
  });

  it("accepts gzip bodies and refuses bombs and bad gzip with 400", async () => {
    const { post, producer } = setup();
    const ok = await post(
      "/v1/batch",
      { batch: [{ type: "track", event: "z", userId: "u" }] },
      { gzip: true },
    );
    expect(ok.status).toBe(200);
    expect(producer.events()).toHaveLength(1);
    const bomb = `{"batch":[],"pad":"${"a".repeat(2_000_000)}"}`;
    expect((await post("/v1/batch", bomb, { gzip: true })).status).toBe(400);
    const res = await post("/v1/batch", "not gzip", { headers: { "content-encoding": "gzip" } });
    expect(res.status).toBe(400);
  });

  it("answers 400 only for bad JSON and sizes, 401 for bad keys; invalid messages are kept and the batch is 200", async () => {
    const { post, producer, rejected, metrics } = setup();
    expect((await post("/v1/batch", "{nope")).status).toBe(400);
    expect((await post("/v1/batch", { batch: "x" })).status).toBe(400);
    expect((await post("/v1/batch", { batch: Array(2_501).fill({}) })).status).toBe(400);
    expect(
      (await post("/v1/track", { event: "x", userId: "u", properties: { pad: "a".repeat(33_000) } })).status,
    ).toBe(400);
    expect((await post("/v1/batch", { batch: [] }, { key: newKey() })).status).toBe(401);
    expect((await post("/v1/batch", { batch: [] }, { key: "a-segment-write-key" })).status).toBe(401);
    expect((await post("/v1/batch", { batch: [] }, { key: null })).status).toBe(401);

    const traits = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`t${i}`, i]));
    const res = await post("/v1/batch", {
      batch: [
        { type: "identify", userId: "u", traits, messageId: "too-many-traits" },
        { type: "track", userId: "u", messageId: "no-event" },
        { type: "track", event: "x", messageId: "no-ids" },
        { type: "track", event: "x", userId: "u", properties: { pad: "a".repeat(33_000) }, messageId: "big" },
        { type: "track", event: "x", userId: "u", properties: { "bad\u0000key": 1 }, messageId: "nul" },
        { type: "track", event: "x", userId: "u", business_id: TWO, messageId: "other-business" },
        { type: "track", event: "x", userId: "u", timestamp: "yesterday-ish", messageId: "bad-time" },
        { type: "fly", userId: "u", messageId: "bad-type" },
        { type: "track", event: "fine", userId: "u", messageId: "fine" },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body.accepted).toBe(1);
    expect(res.body.rejected.map((r: { code: string }) => r.code)).toEqual([
      "invalid_traits",
      "invalid_message",
      "invalid_contact",
      "too_large",
      "invalid_message",
      "forbidden_business",
      "invalid_message",
      "invalid_message",
    ]);
    expect(res.body.rejected[0].reason).toMatch(/^traits: traits must have at most 200 keys/);
    expect(producer.events().map((e) => e.type)).toEqual(["fine"]);
    expect([...rejected.rows.values()].map((r) => r.messageId)).toEqual([
      "too-many-traits",
      "no-event",
      "no-ids",
      "big",
      "nul",
      "other-business",
      "bad-time",
      "bad-type",
    ]);
    expect([...rejected.rows.values()].every((r) => r.businessId === ONE)).toBe(true);
    const text = await metrics.registry.metrics();
    expect(text).toContain(`ingest_rejected_messages_total{business_id="${ONE}",reason="invalid_traits"} 1`);
  });

  it("applies a retried messageId once, never answers 409/422, and answers 503 when Kafka fails", async () => {
    const { post, producer, idempotency, rejected } = setup({ inFlightWaitMs: 300 });
    const batch = { batch: [{ type: "track", event: "x", userId: "u", messageId: "once", timestamp: at }] };
    expect((await post("/v1/batch", batch)).body.accepted).toBe(1);
    const again = await post("/v1/batch", { ...batch, sentAt: new Date().toISOString() });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ accepted: 0, replayed: 1 });
    // another body under the same messageId: 200, kept as rejected, nothing sent
    const other = await post("/v1/batch", {
      batch: [{ type: "track", event: "y", userId: "u", messageId: "once" }],
    });
    expect(other.status).toBe(200);
    expect(other.body.rejected[0].code).toBe("duplicate_other_body");
    // twice in one batch: once
    const twice = await post("/v1/batch", {
      batch: [
        { type: "track", event: "t", userId: "u", messageId: "dup", timestamp: at },
        { type: "track", event: "t", userId: "u", messageId: "dup", timestamp: at },
      ],
    });
    expect(twice.body).toMatchObject({ accepted: 1, replayed: 1 });
    expect(producer.events()).toHaveLength(2);
    expect(rejected.rows.size).toBe(1);

    // a messageId held in flight by another request: 503 (retried by the SDK), not 409
    const held = { batch: [{ type: "track", event: "h", userId: "u", messageId: "held", timestamp: at }] };
    const businessScope = [...idempotency.records.keys()][0]!.split("|").slice(0, 2).join("|");
    const { sha256 } = await import("./idempotency.ts");
    idempotency.records.set(`${businessScope}|segment:${sha256("held")}`, {
      hash: "?",
      eventId: "e",
      done: false,
    });
    const first = await post("/v1/batch", held);
    expect(first.body.rejected?.[0]?.code ?? first.status).toBe("duplicate_other_body");
    idempotency.records.delete(`${businessScope}|segment:${sha256("held")}`);

    producer.failing = true;
    const down = await post("/v1/batch", held);
    expect(down.status).toBe(503);
    expect(down.headers.get("retry-after")).toBe("1");
    producer.failing = false;
    expect((await post("/v1/batch", held)).body.accepted).toBe(1);
  });

  it("waits for a messageId in flight and answers 503 only past the wait", async () => {
    const { post, producer, idempotency } = setup({ inFlightWaitMs: 400 });
    const message = { type: "track", event: "w", userId: "u", messageId: "waiting", timestamp: at };
    // A first request whose send hangs until released.
    let release: () => void = () => {};
    const original = producer.send.bind(producer);
    producer.send = async (topic, messages) => {
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return original(topic, messages);
    };
    const first = post("/v1/batch", { batch: [message] });
    await new Promise((r) => setTimeout(r, 50));
    producer.send = original;
    const second = post("/v1/batch", { batch: [message] });
    setTimeout(() => release(), 150);
    const [a, b] = await Promise.all([first, second]);
    expect(a.body).toMatchObject({ accepted: 1 });
    expect(b.status).toBe(200);
    expect(b.body).toMatchObject({ accepted: 0, replayed: 1 });
    expect(producer.events()).toHaveLength(1);

    // held past the wait: 503, and the event is still not lost (the holder sends it)
    producer.send = async (topic, messages) => {
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return original(topic, messages);
    };
    const other = { ...message, messageId: "slow" };
    const holder = post("/v1/batch", { batch: [other] });
    await new Promise((r) => setTimeout(r, 50));
    producer.send = original;
    const impatient = await post("/v1/batch", { batch: [other] });
    expect(impatient.status).toBe(503);
    release();
    expect((await holder).body.accepted).toBe(1);
    expect([...idempotency.records.values()].every((r) => r.done)).toBe(true);
  });

  it("shares the rate limit of the write key (429 with Retry-After, never 4xx the SDK drops)", async () => {
    const { app } = setup();
    void app;
    const limited = createSegmentApp({
      producer: new FakeProducer(),
      directory: new KeyDirectory(),
      idempotency: new MemoryIdempotency(),
      rejected: new MemoryRejected(),
      jwt: { secret: "unit-test-secret-0123456789abcdef", audience: "authenticated" },
      logger: createLogger("unit", { level: "silent" }),
      logHashSecret: "unit-log-hash-secret-0123456789",
      limits: { userPerSecond: 1, keyPerSecond: () => 3 },
    });
    const body = JSON.stringify({
      batch: Array.from({ length: 3 }, () => ({ type: "track", event: "r", userId: "u" })),
    });
    const send = () =>
      limited.request("/v1/batch", {
        method: "POST",
        headers: { authorization: `Basic ${Buffer.from(`${KEY_ONE}:`).toString("base64")}` },
        body,
      });
    expect((await send()).status).toBe(200);
    const res = await send();
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });
});
