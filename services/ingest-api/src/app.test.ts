import { createLogger } from "@crm/logger";
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createApp } from "./app.ts";
import type { BusinessAccess, TenantDirectory } from "./tenant-directory.ts";
import { FakeProducer, MemoryIdempotency } from "./test-fakes.ts";

// The HTTP layer with in-memory fakes (no server, no stack): routing, error shapes, what reaches the producer.
const SECRET = "unit-test-secret-0123456789abcdef";
const USER = "11111111-1111-4111-8111-111111111111";
const ONE = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const TWO = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

class FakeDirectory implements TenantDirectory {
  constructor(private readonly businesses: string[]) {}
  async businessesOfUser(): Promise<BusinessAccess[]> {
    return this.businesses.map((businessId) => ({ businessId, plan: "standard", defaultCountry: "US" }));
  }
  async businessOfKey() {
    return undefined;
  }
}

function setup(businesses = [ONE]) {
  const producer = new FakeProducer();
  const idempotency = new MemoryIdempotency();
  const app = createApp({
    producer,
    directory: new FakeDirectory(businesses),
    idempotency,
    jwt: { secret: SECRET, audience: "authenticated", algorithms: ["HS256"] },
    logger: createLogger("unit", { level: "silent" }),
    logHashSecret: "unit-log-hash-secret-0123456789",
  });
  return { app, producer, idempotency };
}

async function token() {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(USER)
    .setAudience("authenticated")
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(SECRET));
}

async function post(app: ReturnType<typeof setup>["app"], path: string, body: unknown, headers = {}) {
  const res = await app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${await token()}`, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

describe("ingest app (fakes)", () => {
  it("produces a normalized event keyed by its highest-priority identifier", async () => {
    const { app, producer } = setup();
    const res = await post(app, "/v1/track", {
      type: " signup ",
      contact: { email: " Alice@Example.COM ", phone: "+1 555 123 4567" },
    });
    expect(res.status).toBe(202);
    expect(producer.sent).toHaveLength(1);
    expect(producer.sent[0]!.key).toBe(`${ONE}:email:alice@example.com`);
    expect(JSON.parse(String(producer.sent[0]!.value))).toMatchObject({
      event_id: res.body.event_id,
      business_id: ONE,
      type: "signup",
      contact: { email: "alice@example.com", phone: "+15551234567" },
      source: { kind: "user" },
    });
  });

  it("keys an event whose only identifier is an anonymous_id business:anon:<id>, with its traits (issue 15)", async () => {
    const { app, producer } = setup();
    const res = await post(app, "/v1/track", {
      type: "page_viewed",
      contact: { anonymous_id: " dev-1 ", traits: { plan: "pro" } },
    });
    expect(res.status).toBe(202);
    expect(producer.sent[0]!.key).toBe(`${ONE}:anon:dev-1`);
    expect(JSON.parse(String(producer.sent[0]!.value)).contact).toEqual({
      anonymous_id: "dev-1",
      traits: { plan: "pro" },
    });
    const tooMany = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, i]));
    const refused = await post(app, "/v1/track", { type: "t", contact: { traits: tooMany } });
    expect([refused.status, refused.body.error.code]).toEqual([400, "invalid_request"]);
    expect(refused.body.error.issues[0].path).toEqual(["contact", "traits"]);
    expect(producer.sent).toHaveLength(1);
  });

  it("asks a caller with several businesses to name one, and refuses one it does not belong to", async () => {
    const { app, producer } = setup([ONE, TWO]);
    expect((await post(app, "/v1/track", { type: "t" })).body.error.code).toBe("business_required");
    const other = await post(app, "/v1/track", {
      type: "t",
      business_id: "cccccccc-cccc-4ccc-8ccc-cccccccccccc",
    });
    expect([other.status, other.body.error.code]).toEqual([403, "forbidden_business"]);
    expect((await post(app, "/v1/track", { type: "t", business_id: TWO })).status).toBe(202);
    expect(producer.sent).toHaveLength(1);
  });

  it("answers 503 with Retry-After when the producer is unavailable, and frees the idempotency key", async () => {
    const { app, producer, idempotency } = setup();
    producer.failing = true;
    const res = await post(app, "/v1/track", { type: "t" }, { "idempotency-key": "k1" });
    expect([res.status, res.body.error.code, res.headers.get("retry-after")]).toEqual([
      503,
      "unavailable",
      "1",
    ]);
    expect(idempotency.records.size).toBe(0);
    producer.failing = false;
    expect((await post(app, "/v1/track", { type: "t" }, { "idempotency-key": "k1" })).status).toBe(202);
  });

  it("sends a batch in request order in one send; when Kafka fails, the batch is 503 and every claim is freed", async () => {
    const { app, producer, idempotency } = setup();
    const events = [
      { type: "a", idempotency_key: "b-1" },
      { type: "b" },
      { type: "c", idempotency_key: "b-2" },
    ];
    producer.failing = true;
    const failed = await post(app, "/v1/batch", { events });
    expect([failed.status, failed.body.error.code, failed.headers.get("retry-after")]).toEqual([
      503,
      "unavailable",
      "1",
    ]);
    expect(idempotency.records.size).toBe(0);
    producer.failing = false;
    const res = await post(app, "/v1/batch", { events });
    expect(res.status).toBe(202);
    expect(producer.sent.map((m) => JSON.parse(String(m.value)).type)).toEqual(["a", "b", "c"]);
    const again = await post(app, "/v1/batch", {
      events: [events[0], { type: "changed", idempotency_key: "b-2" }],
    });
    expect(again.body.results).toEqual([
      { ok: true, idempotent: true, event_id: res.body.results[0].event_id },
      { ok: false, error: { code: "idempotency_mismatch", message: expect.any(String) } },
    ]);
    expect(producer.sent).toHaveLength(3);
  });

  it("serves the OpenAPI document generated from the request schemas", async () => {
    const { app } = setup();
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document asserted by path
    const doc = (await (await app.request("/openapi.json")).json()) as Record<string, any>;
    const track = doc.components.schemas.TrackBody;
    expect(track.properties.occurred_at.format).toBe("date-time");
    expect(track.properties.business_id.format).toBe("uuid");
    expect(doc.components.schemas.BatchItem.properties.idempotency_key).toBeDefined();
    expect(Object.keys(doc.paths)).toEqual(["/v1/track", "/v1/batch"]);
  });

  it("answers unknown routes and missing credentials with the JSON error shape", async () => {
    const { app } = setup();
    expect(await (await app.request("/nope")).json()).toEqual({
      ok: false,
      error: { code: "not_found", message: "no such route" },
    });
    const res = await app.request("/v1/track", { method: "POST", body: "{}" });
    expect(res.status).toBe(401);
  });
});

function nestedProps(levels: number): string {
  return `${'{"a":'.repeat(levels)}1${"}".repeat(levels)}`;
}

describe("hostile input (issue 11): what is accepted, the worker can store", () => {
  it.each([
    [
      "a NUL in a contact name",
      '{"type":"x","contact":{"external_id":"a","name":"M\\u0000"}}',
      "contact.name",
    ],
    ["a NUL inside props", '{"type":"x","props":{"note":"a\\u0000b"}}', "props.note"],
    ["a control character in a props key", '{"type":"x","props":{"k\\u0007":1}}', "props.k\u0007"],
    ["a lone surrogate in type", '{"type":"x\\ud800"}', "type"],
    ["a tab in type", '{"type":"a\\tb"}', "type"],
    ["occurred_at in year 0000", '{"type":"x","occurred_at":"0000-01-01T00:00:00Z"}', "occurred_at"],
    ["occurred_at before 1900", '{"type":"x","occurred_at":"1899-12-31T23:59:59Z"}', "occurred_at"],
    ["a number JSON.parse makes Infinity", '{"type":"x","props":{"n":1e400}}', "props.n"],
    ["props 4,000 levels deep", `{"type":"x","props":${nestedProps(4_000)}}`, "props"],
    ["a __proto__ key in props", '{"type":"x","props":{"__proto__":{"a":1}}}', "props.__proto__"],
  ])("refuses %s with 400 and the field's path", async (_what, body, path) => {
    const { app, producer } = setup();
    const res = await post(app, "/v1/track", body);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("invalid_request");
    // the path of the offending value (for depth, the first container past the limit, under `path`)
    const paths: string[] = res.body.error.issues.map((i: { path: string[] }) => i.path.join("."));
    expect(paths.some((p) => p === path || p.startsWith(`${path}.`))).toBe(true);
    expect(producer.sent).toHaveLength(0);
  });

  it("accepts tab and newline in props values, and emoji and combining marks anywhere", async () => {
    const { app, producer } = setup();
    const res = await post(app, "/v1/track", {
      type: "note 🎉",
      contact: { name: "Zoë e\u0301" },
      props: { text: "line 1\nline 2\tend" },
    });
    expect(res.status).toBe(202);
    expect(producer.sent).toHaveLength(1);
  });

  it("gives a keyed request with deep props the same 400 as an unkeyed one", async () => {
    const { app } = setup();
    const body = `{"type":"x","props":${nestedProps(3_000)}}`;
    expect((await post(app, "/v1/track", body)).status).toBe(400);
    expect((await post(app, "/v1/track", body, { "idempotency-key": "deep-1" })).status).toBe(400);
  });

  it("makes a bad batch item that item's error only: the valid items are accepted", async () => {
    const { app, producer } = setup();
    const body = `{"events":[{"type":"ok-1"},{"type":"x","props":${nestedProps(4_000)}},{"type":"x\\u0000"},{"type":"ok-2","idempotency_key":"b-1"}]}`;
    const res = await post(app, "/v1/batch", body);
    expect(res.status).toBe(202);
    expect(res.body.results.map((r: { ok: boolean }) => r.ok)).toEqual([true, false, false, true]);
    expect(res.body.results[1].error.issues[0].path.slice(0, 3)).toEqual(["events", "1", "props"]);
    expect(res.body.results[2].error.issues[0].path).toEqual(["events", "2", "type"]);
    expect(producer.sent).toHaveLength(2);
  });
});
