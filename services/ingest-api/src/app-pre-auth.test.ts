import { Readable } from "node:stream";
import type { EventProducer, OutgoingMessage } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createApp } from "./app.ts";
import type { IdempotencyStore } from "./idempotency.ts";
import { newIngestKey } from "./ingest-keys-cli.ts";
import { AuthFailureLimiter } from "./rate-limit.ts";
import type { TenantDirectory } from "./tenant-directory.ts";

// The per-address check in front of authentication, through the app as @hono/node-server calls it (a Node
// request with a socket address), with in-memory fakes.
const SECRET = "unit-test-secret-0123456789abcdef";
const USER = "11111111-1111-4111-8111-111111111111";
const BUSINESS = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";

function setup(options: { trustedProxyHops?: number } = {}) {
  const sent: OutgoingMessage[] = [];
  const producer: EventProducer = {
    async send(_topic, messages) {
      sent.push(...messages);
    },
    async close() {},
  };
  let keyLookups = 0;
  const directory: TenantDirectory = {
    async businessesOfUser() {
      return [{ businessId: BUSINESS, plan: "standard", defaultCountry: "US" }];
    },
    async businessOfKey() {
      keyLookups += 1;
      return undefined;
    },
  };
  const idempotency = {} as IdempotencyStore;
  const app = createApp({
    producer,
    directory,
    idempotency,
    jwt: { secret: SECRET, audience: "authenticated", algorithms: ["HS256"] },
    logger: createLogger("unit", { level: "silent" }),
    logHashSecret: "unit-log-hash-secret-0123456789",
    authFailures: new AuthFailureLimiter({ ratePerSecond: 1, burst: 3 }),
    ...options,
  });
  return { app, sent, lookups: () => keyLookups };
}

/** POST /v1/track as @hono/node-server hands it over: the Node request, with its peer address and body. */
async function track(
  app: ReturnType<typeof setup>["app"],
  credential: string,
  from: { peer: string; forwardedFor?: string },
) {
  const body = JSON.stringify({ type: "t" });
  const headers: Record<string, string> = {
    authorization: `Bearer ${credential}`,
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    ...(from.forwardedFor ? { "x-forwarded-for": from.forwardedFor } : {}),
  };
  const incoming = Object.assign(Readable.from([Buffer.from(body)]), {
    headers,
    socket: { remoteAddress: from.peer },
    complete: true,
  });
  const res = await app.request("/v1/track", { method: "POST", headers, body }, { incoming });
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

const userToken = () =>
  new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(USER)
    .setAudience("authenticated")
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(SECRET));

describe("per-address check of failed authentications", () => {
  it("refuses an address with 429 rate_limited and Retry-After after `burst` failures, before any lookup", async () => {
    const { app, lookups } = setup();
    const attacker = { peer: "203.0.113.7" };
    for (let i = 0; i < 3; i++) expect((await track(app, newIngestKey(), attacker)).status).toBe(401);
    expect(lookups()).toBe(3);
    const refused = await track(app, newIngestKey(), attacker);
    expect(refused.status).toBe(429);
    expect(refused.body).toEqual({ ok: false, error: { code: "rate_limited", message: expect.any(String) } });
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(lookups()).toBe(3);
    // malformed credentials count as failures too, and another address is not affected
    expect((await track(app, "ik_short", attacker)).status).toBe(429);
    expect((await track(app, newIngestKey(), { peer: "198.51.100.1" })).status).toBe(401);
  });

  it("lets a credential that authenticated recently through an address that is being refused", async () => {
    const { app, sent } = setup();
    const shared = { peer: "203.0.113.7" };
    const token = await userToken();
    expect((await track(app, token, shared)).status).toBe(202);
    for (let i = 0; i < 10; i++) await track(app, newIngestKey(), shared);
    expect((await track(app, newIngestKey(), shared)).status).toBe(429);
    expect((await track(app, token, shared)).status).toBe(202);
    expect(sent).toHaveLength(2);
    // a good credential never seen before from that address waits like everyone else there
    const other = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(USER)
      .setAudience("authenticated")
      .setExpirationTime("6m")
      .sign(new TextEncoder().encode(SECRET));
    expect((await track(app, other, shared)).status).toBe(429);
  });

  it("keys on X-Forwarded-For only behind trusted proxies", async () => {
    const direct = setup();
    const proxied = setup({ trustedProxyHops: 1 });
    for (const { app } of [direct, proxied]) {
      for (let i = 0; i < 3; i++) {
        await track(app, newIngestKey(), { peer: "10.0.0.1", forwardedFor: "203.0.113.7" });
      }
    }
    // without trusted proxies the forwarded address is ignored: the peer is refused whatever the header says
    expect(
      (await track(direct.app, newIngestKey(), { peer: "10.0.0.1", forwardedFor: "198.51.100.1" })).status,
    ).toBe(429);
    // behind one, the client the proxy saw is what counts: another client through the same proxy is not refused
    expect(
      (await track(proxied.app, newIngestKey(), { peer: "10.0.0.1", forwardedFor: "198.51.100.1" })).status,
    ).toBe(401);
    expect(
      (await track(proxied.app, newIngestKey(), { peer: "10.0.0.1", forwardedFor: "203.0.113.7" })).status,
    ).toBe(429);
  });
});
