import { DependencyUnavailableError } from "@crm/errors";
import type { EventProducer, OutgoingMessage } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createApp } from "./app.ts";
import type { ClaimOutcome, IdempotencyStore } from "./idempotency.ts";
import type { BusinessAccess, TenantDirectory } from "./tenant-directory.ts";

// The HTTP layer with in-memory fakes (no server, no stack): routing, error shapes, what reaches the producer.
const SECRET = "unit-test-secret-0123456789abcdef";
const USER = "11111111-1111-4111-8111-111111111111";
const ONE = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const TWO = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

class FakeProducer implements EventProducer {
  sent: OutgoingMessage[] = [];
  failing = false;
  async send(_topic: string, messages: OutgoingMessage[]) {
    if (this.failing) throw new DependencyUnavailableError("kafka", "down");
    this.sent.push(...messages);
  }
  async close() {}
}

class FakeDirectory implements TenantDirectory {
  constructor(private readonly businesses: string[]) {}
  async businessesOfUser(): Promise<BusinessAccess[]> {
    return this.businesses.map((businessId) => ({ businessId, plan: "standard", defaultCountry: "US" }));
  }
  async businessOfKey() {
    return undefined;
  }
}

class MemoryIdempotency implements IdempotencyStore {
  records = new Map<string, { hash: string; eventId: string; done: boolean }>();
  async claim(businessId: string, caller: string, claims: { key: string; requestHash: string }[]) {
    return claims.map(({ key, requestHash }): ClaimOutcome => {
      const id = `${businessId}|${caller}|${key}`;
      const found = this.records.get(id);
      if (!found) {
        const eventId = crypto.randomUUID();
        this.records.set(id, { hash: requestHash, eventId, done: false });
        return { kind: "claimed", eventId };
      }
      if (found.hash !== requestHash) return { kind: "mismatch" };
      return found.done
        ? { kind: "replay", eventId: found.eventId }
        : { kind: "in_flight", retryAfterSeconds: 1 };
    });
  }
  async complete(businessId: string, caller: string, keys: string[]) {
    for (const key of keys) this.records.get(`${businessId}|${caller}|${key}`)!.done = true;
  }
  async release(businessId: string, caller: string, keys: string[]) {
    for (const key of keys) this.records.delete(`${businessId}|${caller}|${key}`);
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
