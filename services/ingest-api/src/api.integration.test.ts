import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import { TOPICS } from "@crm/kafka";
import { createBusiness, TopicProbe, testEnv } from "@crm/testing";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runIngestKeys } from "./ingest-keys-cli.ts";
import { startTestApi, type TestApi } from "./test-harness.ts";

// The HTTP contract of SPEC 4 on the real stack: auth, tenant checks, validation, rate limits. Every refused
// request is checked to have left nothing on events.raw.v1.
describe("ingest API contract", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const issuer = "https://auth.test.local/";
  const secret = new TextEncoder().encode(env.jwtSecret);
  let api: TestApi;
  let raw: TopicProbe;
  let jwksServer: Server;
  let jwksFetches = 0;
  let rsa: Awaited<ReturnType<typeof generateKeyPair>>;
  let ec: Awaited<ReturnType<typeof generateKeyPair>>;
  let stranger: Awaited<ReturnType<typeof generateKeyPair>>;
  const secretsSeen: string[] = [];

  beforeAll(async () => {
    [rsa, ec, stranger] = await Promise.all([
      generateKeyPair("RS256", { extractable: true }),
      generateKeyPair("ES256", { extractable: true }),
      generateKeyPair("RS256", { extractable: true }),
    ]);
    const keys = [
      { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
      { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
    ];
    jwksServer = createServer((_req, res) => {
      jwksFetches += 1;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
    const address = jwksServer.address() as { port: number };
    raw = await new TopicProbe(env.brokers, TOPICS.raw).start();
    api = await startTestApi({
      jwt: { issuer, jwksUrl: `http://127.0.0.1:${address.port}/jwks.json` },
      tenantCacheMs: 1_000,
    });
  });

  afterAll(async () => {
    await Promise.all([api?.close(), raw?.stop()]);
    await new Promise((resolve) => jwksServer?.close(resolve));
    await admin.end();
  });

  function claims(sub: string) {
    return new SignJWT({ role: "authenticated" })
      .setSubject(sub)
      .setAudience("authenticated")
      .setIssuer(issuer)
      .setIssuedAt();
  }
  async function userToken(sub: string): Promise<string> {
    const token = await claims(sub)
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("10m")
      .sign(secret);
    secretsSeen.push(token);
    return token;
  }

  /**
   * Sends a sentinel event for `businessId` with the same contact as the refused requests (same key, same
   * partition) and waits for it: anything enqueued before it for this business would be seen too.
   */
  async function expectOnlyEnqueued(businessId: string, token: string, expected: string[] = []) {
    const sentinel = await api.post("/v1/track", token, {
      type: "sentinel",
      business_id: businessId,
      // the phone never changes the key (email outranks it) but gives the log check a phone to look for
      contact: { email: "victim@example.com", phone: "+1 555 123 4567" },
    });
    expect(sentinel.status).toBe(202);
    await raw.waitFor((m) => (m.value as { event_id: string }).event_id === sentinel.body.event_id);
    const ids = raw.messages
      .filter((m) => (m.value as { business_id: string }).business_id === businessId)
      .map((m) => (m.value as { event_id: string }).event_id);
    expect(ids.sort()).toEqual([...expected, sentinel.body.event_id].sort());
  }

  it("seed regression 1 and the cross-tenant matrix: all 403, nothing enqueued", async () => {
    const member = randomUUID();
    const a = await createBusiness(admin);
    const b = await createBusiness(admin, { team: [member] });
    const tokenA = await userToken(a.ownerId);
    const tokenB = await userToken(b.ownerId);
    const memberToken = await userToken(member);
    const out: string[] = [];
    await runIngestKeys(["create", a.businessId, "test"], admin, (line) => out.push(line));
    const keyA = /ik_\S+/.exec(out.join("\n"))![0];
    secretsSeen.push(keyA);
    const contact = { email: "victim@example.com" };

    // The team member may write for B while still on the team (and so fills the membership cache).
    const before = await api.post("/v1/track", memberToken, {
      type: "t",
      business_id: b.businessId,
      contact,
    });
    expect(before.status).toBe(202);
    await admin.query("DELETE FROM business_team WHERE business_id = $1 AND user_id = $2", [
      b.businessId,
      member,
    ]);
    await new Promise((resolve) => setTimeout(resolve, 1_200)); // this API's cache window

    const attempts = [
      await api.post("/v1/track", tokenA, { type: "t", business_id: b.businessId, contact }),
      await api.post("/v1/track", tokenA, { type: "t", props: { business_id: b.businessId }, contact }),
      await api.post("/v1/track", keyA, { type: "t", business_id: b.businessId, contact }),
      await api.post("/v1/track", keyA, { type: "t", props: { business_id: b.businessId }, contact }),
      await api.post("/v1/track", memberToken, { type: "t", business_id: b.businessId, contact }),
      await api.post("/v1/batch", tokenA, { events: [{ type: "t", business_id: b.businessId, contact }] }),
    ];
    for (const res of attempts.slice(0, 5)) {
      expect(res.status).toBe(403);
      expect(res.body).toEqual({
        ok: false,
        error: { code: "forbidden_business", message: expect.any(String) },
      });
    }
    expect(attempts[5]!.status).toBe(202);
    expect(attempts[5]!.body.results[0]).toMatchObject({ ok: false, error: { code: "forbidden_business" } });

    // The key works for its own business; the log line names the event, never the user.
    const own = await api.post("/v1/track", keyA, { type: "t", contact });
    expect(own.status).toBe(202);
    await expectOnlyEnqueued(b.businessId, tokenB, [before.body.event_id]);
    expect(api.logs.text()).toContain("crm_track_unauthorized_business");
    expect(api.logs.text()).not.toContain(a.ownerId);
    expect(api.logs.text()).not.toContain(member);
  });

  it("ingest keys: created by the CLI, hashed at rest, revocable", async () => {
    const a = await createBusiness(admin);
    const out: string[] = [];
    expect(await runIngestKeys(["create", a.businessId], admin, (line) => out.push(line))).toBe(0);
    const key = /ik_\S+/.exec(out.join("\n"))![0];
    const keyId = /key id: (\S+)/.exec(out.join("\n"))![1]!;
    secretsSeen.push(key);
    const stored = await admin.query("SELECT key_hash FROM ingest_keys WHERE id = $1", [keyId]);
    expect(stored.rows[0].key_hash).not.toContain(key.slice(3));
    expect((await api.post("/v1/track", key, { type: "k" })).status).toBe(202);
    expect(await runIngestKeys(["revoke", keyId], admin, () => {})).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    const revoked = await api.post("/v1/track", key, { type: "k" });
    expect(revoked.status).toBe(401);
    expect(revoked.body.error.code).toBe("unauthorized");
  });

  it("the JWT matrix: every forged, expired or misdirected token is 401 and nothing is enqueued", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const payload = { sub: ownerId, aud: "authenticated", iss: issuer, exp: now + 600, iat: now };
    const valid = await userToken(ownerId);
    const [head, body, sig] = valid.split(".");
    const rsaPem = await exportSPKI(rsa.publicKey);
    const cases: Record<string, string> = {
      "alg none": `${b64({ alg: "none", typ: "JWT" })}.${b64(payload)}.`,
      "wrong HS256 key": await claims(ownerId)
        .setProtectedHeader({ alg: "HS256" })
        .setExpirationTime("10m")
        .sign(new TextEncoder().encode("another-secret-that-is-long-enough")),
      "HS256 signed with the RSA public key (HS/RS confusion)": await claims(ownerId)
        .setProtectedHeader({ alg: "HS256", kid: "rsa-1" })
        .setExpirationTime("10m")
        .sign(new TextEncoder().encode(rsaPem)),
      "RS256 header on an HMAC signature": `${b64({ alg: "RS256", kid: "rsa-1" })}.${body}.${sig}`,
      expired: await claims(ownerId)
        .setProtectedHeader({ alg: "HS256" })
        .setExpirationTime(now - 60)
        .sign(secret),
      "wrong aud": await new SignJWT({})
        .setSubject(ownerId)
        .setAudience("someone-else")
        .setIssuer(issuer)
        .setExpirationTime("10m")
        .setProtectedHeader({ alg: "HS256" })
        .sign(secret),
      "wrong iss": await new SignJWT({})
        .setSubject(ownerId)
        .setAudience("authenticated")
        .setIssuer("https://evil.example/")
        .setExpirationTime("10m")
        .setProtectedHeader({ alg: "HS256" })
        .sign(secret),
      "missing exp": await claims(ownerId).setProtectedHeader({ alg: "HS256" }).sign(secret),
      "tampered payload": `${head}.${b64({ ...payload, sub: randomUUID() })}.${sig}`,
      "unknown kid": await claims(ownerId)
        .setProtectedHeader({ alg: "RS256", kid: "not-in-the-set" })
        .setExpirationTime("10m")
        .sign(stranger.privateKey),
      "known kid, wrong RSA key": await claims(ownerId)
        .setProtectedHeader({ alg: "RS256", kid: "rsa-1" })
        .setExpirationTime("10m")
        .sign(stranger.privateKey),
      "algorithm not allowed (HS512)": await claims(ownerId)
        .setProtectedHeader({ alg: "HS512" })
        .setExpirationTime("10m")
        .sign(new TextEncoder().encode(`${env.jwtSecret}${env.jwtSecret}${env.jwtSecret}${env.jwtSecret}`)),
      "subject not a user id": await claims("admin")
        .setProtectedHeader({ alg: "HS256" })
        .setExpirationTime("10m")
        .sign(secret),
      garbage: "not.a.jwt",
    };
    secretsSeen.push(...Object.values(cases));
    const statuses: Record<string, number> = {};
    for (const [name, token] of Object.entries(cases)) {
      const res = await api.post("/v1/track", token, {
        type: "t",
        business_id: businessId,
        contact: { email: "victim@example.com" },
      });
      statuses[name] = res.status;
      expect(res.body.error?.code, name).toBe("unauthorized");
    }
    expect(
      Object.values(statuses).every((s) => s === 401),
      JSON.stringify(statuses),
    ).toBe(true);
    expect((await api.post("/v1/track", undefined, { type: "t" })).status).toBe(401);

    // RS256 and ES256 from the JWKS are accepted; a burst of unknown kids costs at most one more JWKS fetch.
    const rs = await claims(ownerId)
      .setProtectedHeader({ alg: "RS256", kid: "rsa-1" })
      .setExpirationTime("10m")
      .sign(rsa.privateKey);
    const es = await claims(ownerId)
      .setProtectedHeader({ alg: "ES256", kid: "ec-1" })
      .setExpirationTime("10m")
      .sign(ec.privateKey);
    secretsSeen.push(rs, es);
    const okRs = await api.post("/v1/track", rs, { type: "rs", business_id: businessId });
    const okEs = await api.post("/v1/track", es, { type: "es", business_id: businessId });
    expect([okRs.status, okEs.status]).toEqual([202, 202]);
    const fetchesBefore = jwksFetches;
    for (let i = 0; i < 20; i++) {
      const forged = await claims(ownerId)
        .setProtectedHeader({ alg: "RS256", kid: `random-${i}` })
        .setExpirationTime("10m")
        .sign(stranger.privateKey);
      expect((await api.post("/v1/track", forged, { type: "t", business_id: businessId })).status).toBe(401);
    }
    expect(jwksFetches - fetchesBefore).toBeLessThanOrEqual(1);
    await expectOnlyEnqueued(businessId, valid, [okRs.body.event_id, okEs.body.event_id]);
  });

  it("bad input: each gets its status and code, with issues naming the field, and nothing is enqueued", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await userToken(ownerId);
    const ok = { type: "t", business_id: businessId, contact: { email: "victim@example.com" } };
    const future = new Date(Date.now() + 25 * 3600_000).toISOString();
    const cases: [string, unknown, number, string, string?][] = [
      ["empty type", { ...ok, type: "" }, 400, "invalid_request", "type"],
      ["blank type", { ...ok, type: "   " }, 400, "invalid_request", "type"],
      ["missing type", { business_id: businessId }, 400, "invalid_request", "type"],
      ["too-long type", { ...ok, type: "x".repeat(129) }, 400, "invalid_request", "type"],
      ["props array", { ...ok, props: [1] }, 400, "invalid_request", "props"],
      ["props string", { ...ok, props: "x" }, 400, "invalid_request", "props"],
      ["props null", { ...ok, props: null }, 400, "invalid_request", "props"],
      [
        "props over 32 KiB",
        { ...ok, props: { big: "x".repeat(33 * 1024) } },
        400,
        "invalid_request",
        "props",
      ],
      ["bad email", { ...ok, contact: { email: "alice@@example" } }, 400, "invalid_request", "contact.email"],
      ["bad phone", { ...ok, contact: { phone: "12" } }, 400, "invalid_request", "contact.phone"],
      ["future occurred_at", { ...ok, occurred_at: future }, 400, "invalid_request", "occurred_at"],
      ["non-date occurred_at", { ...ok, occurred_at: "yesterday" }, 400, "invalid_request", "occurred_at"],
      ["body is an array", [ok], 400, "invalid_request"],
      ["non-JSON", "{type: signup", 400, "invalid_request"],
      ["oversized body", { ...ok, props: { big: "x".repeat(70 * 1024) } }, 413, "payload_too_large"],
    ];
    for (const [name, body, status, code, field] of cases) {
      const res = await api.post("/v1/track", token, body);
      expect(res.status, name).toBe(status);
      expect(res.body.ok, name).toBe(false);
      expect(res.body.error.code, name).toBe(code);
      if (field)
        expect(
          res.body.error.issues.map((i: { path: string[] }) => i.path.join(".")),
          name,
        ).toContain(field);
    }
    const badKey = await api.post("/v1/track", token, ok, { "idempotency-key": "x".repeat(256) });
    expect([badKey.status, badKey.body.error.code]).toEqual([400, "invalid_request"]);
    const batches: [string, unknown, number, string][] = [
      [
        "batch over 512 KiB",
        { events: Array.from({ length: 20 }, () => ({ ...ok, props: { p: "x".repeat(30_000) } })) },
        413,
        "payload_too_large",
      ],
      [
        "batch over 500 events",
        { events: Array.from({ length: 501 }, () => ({ type: "t" })) },
        413,
        "payload_too_large",
      ],
      ["batch without events", { items: [] }, 400, "invalid_request"],
      ["batch events not an array", { events: {} }, 400, "invalid_request"],
      ["batch not JSON", "[[", 400, "invalid_request"],
    ];
    for (const [name, body, status, code] of batches) {
      const res = await api.post("/v1/batch", token, body);
      expect([res.status, res.body.error?.code], name).toEqual([status, code]);
    }
    // In a batch, invalid items do not stop valid ones.
    const mixed = await api.post("/v1/batch", token, {
      events: [{ ...ok, type: "" }, { ...ok, contact: { phone: "12" } }, ok],
    });
    expect(mixed.status).toBe(202);
    expect(mixed.body.results[0]).toMatchObject({ ok: false, error: { code: "invalid_request" } });
    expect(mixed.body.results[1].error.issues[0].path).toEqual(["events", "1", "contact", "phone"]);
    expect(mixed.body.results[2]).toMatchObject({ ok: true, event_id: expect.any(String) });
    await expectOnlyEnqueued(businessId, token, [mixed.body.results[2].event_id]);
  });

  it("rate limit: a user over 20 events/s gets 429 with Retry-After and RateLimit headers; another user does not", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const other = randomUUID();
    await admin.query("INSERT INTO business_team (business_id, user_id) VALUES ($1, $2)", [
      businessId,
      other,
    ]);
    const token = await userToken(ownerId);
    const otherToken = await userToken(other);
    const burst = await Promise.all(
      Array.from({ length: 30 }, () =>
        api.post("/v1/track", token, { type: "burst", business_id: businessId }),
      ),
    );
    const limited = burst.filter((r) => r.status === 429);
    const accepted = burst.filter((r) => r.status === 202);
    expect(accepted.length).toBeGreaterThanOrEqual(18);
    // 20 from the full bucket, plus what refills (20/s) while the burst is being handled on a busy machine.
    expect(accepted.length).toBeLessThanOrEqual(24);
    expect(limited.length).toBeGreaterThan(0);
    const refused = limited[0]!;
    expect(refused.body.error.code).toBe("rate_limited");
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(refused.headers.get("ratelimit")).toMatch(/limit=20, remaining=\d+, reset=\d+/);
    expect(refused.headers.get("ratelimit-policy")).toBe("20;w=1");
    expect(accepted[0]!.headers.get("ratelimit-limit")).toBe("20");
    // A batch counts each event.
    const fresh = await userToken(randomUUID());
    const bigBatch = await api.post("/v1/batch", fresh, {
      events: Array.from({ length: 21 }, () => ({ type: "t" })),
    });
    expect(bigBatch.status).toBe(429);
    // Another caller of the same business is unaffected.
    expect((await api.post("/v1/track", otherToken, { type: "t", business_id: businessId })).status).toBe(
      202,
    );
    // After Retry-After the user may send again.
    await new Promise((resolve) => setTimeout(resolve, Number(refused.headers.get("retry-after")) * 1000));
    expect((await api.post("/v1/track", token, { type: "t", business_id: businessId })).status).toBe(202);
  });

  it("rate limit across instances: with two live instances each enforces half the limit", async () => {
    const group = randomUUID();
    const [one, two] = await Promise.all([
      startTestApi({ instanceGroup: group }),
      startTestApi({ instanceGroup: group }),
    ]);
    try {
      // Each learns of the other at its next heartbeat (every second here, every 5 s in production).
      await Promise.all([one.instances.beat(), two.instances.beat()]);
      expect([one.instances.share(), two.instances.share()]).toEqual([0.5, 0.5]);
      const { businessId, ownerId } = await createBusiness(admin);
      const token = await userToken(ownerId);
      const send = (target: TestApi) =>
        target.post("/v1/track", token, { type: "multi", business_id: businessId });
      const results = await Promise.all([
        ...Array.from({ length: 15 }, () => send(one)),
        ...Array.from({ length: 15 }, () => send(two)),
      ]);
      const accepted = results.filter((r) => r.status === 202).length;
      // 20/s across the cluster: 10 per instance, plus at most a token or two refilled meanwhile.
      expect(accepted).toBeGreaterThanOrEqual(18);
      expect(accepted).toBeLessThanOrEqual(24);
      expect(results[0]!.headers.get("ratelimit-limit")).toBe("20");
      await two.close();
      expect(await one.instances.beat()).toBe(1);
      expect(one.instances.share()).toBe(1);
    } finally {
      await Promise.all([one.close(), two.close().catch(() => {})]);
    }
  });

  it("operations: healthz, readyz, metrics, and the OpenAPI document generated from the validating schemas", async () => {
    expect((await api.app.request("/healthz")).status).toBe(200);
    const ready = await api.app.request("/readyz");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ok: true, checks: { kafka: true, postgres: true } });
    const metrics = await (await api.app.request("/metrics")).text();
    expect(metrics).toMatch(
      /ingest_http_requests_total\{method="POST",route="\/v1\/track",status="202"\} \d+/,
    );
    expect(metrics).toContain("ingest_kafka_produce_duration_seconds_bucket");
    expect(metrics).toMatch(/ingest_rate_limited_total\{caller_kind="user"\} [1-9]/);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document asserted by path
    const doc = (await (await api.app.request("/openapi.json")).json()) as any;
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.components.schemas.TrackBody.properties.type).toMatchObject({ minLength: 1, maxLength: 128 });
    expect(doc.components.schemas.TrackBody.required).toEqual(["type"]);
    expect(doc.paths["/v1/batch"].post.responses["202"]).toBeDefined();
  });

  it("logs captured during the suite hold no raw email, phone, JWT or ingest key", () => {
    const logs = api.logs.text();
    expect(logs.length).toBeGreaterThan(0);
    for (const secretValue of secretsSeen) expect(logs).not.toContain(secretValue);
    expect(logs).not.toContain("victim@example.com");
    expect(logs).not.toContain("5551234567");
    expect(logs).not.toContain("555 123 4567");
    expect(logs).not.toMatch(/eyJ[\w-]+\.eyJ/);
    expect(logs).not.toMatch(/ik_[\w-]{20,}/);
  });
});
