import { randomUUID } from "node:crypto";
import { createAuthenticator, PgTenantDirectory } from "@crm/auth";
import { stackEnv } from "@crm/config";
import { createPool } from "@crm/db";
import { hostileString, rawText, tree } from "@crm/e2e/hostile-arbitraries.ts";
import { createKafka, kafkaCredentials } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { poll } from "@crm/process";
import { createBusiness, signUserToken, testEnv } from "@crm/testing";
import fc from "fast-check";
import { SignJWT } from "jose";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "./app.ts";
import { DeadLetterLog, deadLetterId } from "./dead-letters.ts";
import { RateSampler } from "./rates.ts";
import { Sessions } from "./session.ts";
import { adminKafka, type ConsoleTopics, createConsoleTopics, dropConsoleTopics } from "./test-harness.ts";

// The console's JSON API in process (app.request) on the real database and Kafka: the cross-tenant matrix of every
// tenant-scoped read and write, sessions and CSRF, and hostile input into every parameter and body.
const env = testEnv();
const stack = stackEnv();
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 3 });
const consoleDatabaseUrl = stack.CONSOLE_DATABASE_URL ?? "";
const db = createPool({ connectionString: consoleDatabaseUrl, applicationName: "console-test", max: 4 });
const logger = createLogger("console-test", { level: "silent" });
const kafka = createKafka({
  brokers: env.brokers,
  clientId: "console-test",
  credentials: kafkaCredentials(stack, "console") ?? null,
});
const operatorToken = `op_${randomUUID()}${randomUUID()}`;
const sessionSecret = randomUUID() + randomUUID();

let topics: ConsoleTopics;
let deadLetters: DeadLetterLog;
let replays: ReturnType<typeof kafka.producer>;
let app: ReturnType<typeof createApp>;

interface Tenant {
  businessId: string;
  ownerId: string;
  memberId: string;
  contactId: string;
  email: string;
  deadLetter: string;
}
let a: Tenant;
let b: Tenant;
const tokens: Record<string, string> = {};

async function tenant(): Promise<Omit<Tenant, "deadLetter">> {
  const memberId = randomUUID();
  const { businessId, ownerId } = await createBusiness(admin, { team: [memberId] });
  const contactId = randomUUID();
  const email = `matrix-${contactId.slice(0, 8)}@example.com`;
  await admin.query(
    `INSERT INTO crm_contacts (id, business_id, email, name, first_seen_at, last_seen_at)
     VALUES ($1, $2, $3, 'Matrix Person', now(), now())`,
    [contactId, businessId, email],
  );
  await admin.query(
    "INSERT INTO contact_identities (business_id, type, value, contact_id) VALUES ($1, 'email', $2, $3)",
    [businessId, email, contactId],
  );
  return { businessId, ownerId, memberId, contactId, email };
}

/** A dead letter as the worker writes one (resolver-worker consumer.ts: original key and bytes, reason headers). */
async function deadLetterOf(businessId: string): Promise<string> {
  const producer = adminKafka(env.brokers).producer();
  await producer.connect();
  const [written] = await producer.send({
    topic: topics.dlqTopic,
    acks: -1,
    messages: [
      {
        key: `${businessId}:email:someone@example.com`,
        value: JSON.stringify({ event_id: randomUUID(), business_id: businessId, type: "x" }),
        headers: {
          "error.class": "NonRetriableError",
          "error.message": "value does not match events.raw.v1",
          "error.kind": "permanent",
          attempts: "1",
          "source.topic": topics.rawTopic,
          "source.partition": "0",
          "source.offset": "7",
        },
      },
    ],
  });
  await producer.disconnect();
  return deadLetterId(topics.dlqTopic, written!.partition, written!.baseOffset!);
}

beforeAll(async () => {
  topics = await createConsoleTopics(env.brokers, 1);
  const [ta, tb] = [await tenant(), await tenant()];
  a = { ...ta, deadLetter: await deadLetterOf(ta.businessId) };
  b = { ...tb, deadLetter: await deadLetterOf(tb.businessId) };
  deadLetters = new DeadLetterLog({ kafka, topic: topics.dlqTopic, logger });
  await deadLetters.start();
  await poll("both dead letters read", () => (deadLetters.size === 2 ? true : undefined), {
    timeoutMs: 30_000,
  });
  replays = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await replays.connect();
  const directory = new PgTenantDirectory(db, 0);
  app = createApp({
    db,
    directory,
    authenticator: createAuthenticator({
      jwt: { secret: env.jwtSecret, audience: "authenticated" },
      directory,
    }),
    sessions: new Sessions(sessionSecret, 3_600),
    operatorToken,
    operatorClaim: "app_metadata.crm_operator",
    kafka,
    replays,
    deadLetters,
    rates: new RateSampler({
      kafka,
      ingestUrl: "http://127.0.0.1:1",
      workerUrl: "http://127.0.0.1:1",
      publishedTopic: topics.rawTopic,
      intervalMs: 60_000,
    }),
    rawTopic: topics.rawTopic,
    dlqTopic: topics.dlqTopic,
    topics: [],
    connect: { url: undefined, name: "crm-outbox" },
    slotName: "crm_outbox",
    lagGroups: [],
    services: [],
    logger,
  });
  tokens.operator = operatorToken;
  tokens.ownerA = await signUserToken(env.jwtSecret, a.ownerId);
  tokens.memberA = await signUserToken(env.jwtSecret, a.memberId);
  tokens.ownerB = await signUserToken(env.jwtSecret, b.ownerId);
  tokens.stranger = await signUserToken(env.jwtSecret, randomUUID());
}, 120_000);

afterAll(async () => {
  await deadLetters?.stop();
  await replays?.disconnect().catch(() => {});
  if (topics) await dropConsoleTopics(env.brokers, topics);
  await db.end();
  await admin.end();
});

const call = (who: string | undefined, path: string, init: RequestInit = {}) =>
  app.request(path, {
    ...init,
    headers: {
      ...(who ? { authorization: `Bearer ${tokens[who]}` } : {}),
      ...(init.body ? { "content-type": "application/json" } : {}),
      ...(init.headers as Record<string, string>),
    },
  });

const post = (who: string | undefined, path: string, body: unknown) =>
  call(who, path, { method: "POST", body: JSON.stringify(body) });

describe("cross-tenant matrix", () => {
  // viewer -> sees business A, sees business B (undefined: refused before any data)
  const viewers: [string | undefined, boolean | number, boolean | number][] = [
    ["operator", true, true],
    ["ownerA", true, false],
    ["memberA", true, false],
    ["ownerB", false, true],
    ["stranger", 403, 403],
    [undefined, 401, 401],
  ];

  for (const [who, seesA, seesB] of viewers) {
    it(`${who ?? "no credential"}: contact cards, search, reveals, dead letters, audit`, async () => {
      for (const [t, sees] of [
        [a, seesA],
        [b, seesB],
      ] as const) {
        const card = await call(who, `/api/contacts/${t.contactId}`);
        const search = await call(who, `/api/contacts?q=${encodeURIComponent(t.email.toUpperCase())}`);
        const reveal = await post(who, `/api/contacts/${t.contactId}/reveal`, { field: "email" });
        const discard = await post(who, "/api/dead-letters/discard", { ids: [t.deadLetter] });
        if (typeof sees === "number") {
          for (const res of [card, search, reveal, discard]) {
            expect(res.status).toBe(sees);
            expect(await res.json()).toMatchObject({ ok: false, error: { code: expect.any(String) } });
          }
          continue;
        }
        expect(card.status).toBe(sees ? 200 : 404);
        const cardBody = (await card.json()) as { contact?: { email: string } };
        if (sees) expect(cardBody.contact?.email).not.toBe(t.email); // masked until revealed
        expect(JSON.stringify(cardBody)).not.toContain(t.email);
        const hits = ((await search.json()) as { hits: { contact_id: string }[] }).hits;
        expect(hits.map((h) => h.contact_id)).toEqual(sees ? [t.contactId] : []);
        expect(reveal.status).toBe(sees ? 200 : 404);
        const revealed = JSON.stringify(await reveal.json());
        expect(revealed.includes(t.email)).toBe(sees);
        expect(discard.status).toBe(sees ? 200 : 404);
      }
      if (typeof seesA === "number") return;
      const list = (await (await call(who, "/api/dead-letters?status=all")).json()) as {
        dead_letters: { id: string }[];
      };
      const ids = list.dead_letters.map((d) => d.id).sort();
      expect(ids).toEqual([...(seesA ? [a.deadLetter] : []), ...(seesB ? [b.deadLetter] : [])].sort());
      const audit = (await (await call(who, "/api/audit")).json()) as { entries: { business_id: string }[] };
      const businesses = new Set(audit.entries.map((e) => e.business_id));
      expect(businesses.has(a.businessId)).toBe(seesA);
      expect(businesses.has(b.businessId)).toBe(seesB);
      const messages = (await (
        await call(who, `/api/topics/${topics.dlqTopic}/messages?limit=50`)
      ).json()) as {
        messages: { businessId: string }[];
      };
      const shown = new Set(messages.messages.map((m) => m.businessId));
      expect(shown.has(a.businessId)).toBe(seesA);
      expect(shown.has(b.businessId)).toBe(seesB);
    });
  }

  it("records each reveal with who and what, never the value", async () => {
    const { rows } = await admin.query(
      "SELECT actor, target, detail::text FROM console_audit WHERE contact_id = $1 AND action = 'reveal' ORDER BY id",
      [a.contactId],
    );
    expect(rows.map((r) => r.actor)).toEqual(["operator", `user:${a.ownerId}`, `user:${a.memberId}`]);
    expect(JSON.stringify(rows)).not.toContain(a.email);
  });
});

describe("least privilege", () => {
  it("gives the console's lookups to its own role only, and that role writes no tenant table", async () => {
    const service = new pg.Client({ connectionString: env.databaseUrl });
    await service.connect();
    try {
      for (const call of [
        "SELECT * FROM app.console_find_identities(ARRAY['email'], ARRAY['x@example.com'], NULL)",
        "SELECT app.console_contact_business(gen_random_uuid(), NULL)",
        "SELECT * FROM app.console_audit_list(NULL, NULL, 10)",
      ]) {
        await expect(service.query(call)).rejects.toMatchObject({ code: "42501" });
      }
    } finally {
      await service.end();
    }
    const { rows } = await admin.query<{ rolbypassrls: boolean; rolsuper: boolean }>(
      "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = 'crm_console'",
    );
    expect(rows).toEqual([{ rolbypassrls: false, rolsuper: false }]);
    await expect(
      db.query("UPDATE crm_contacts SET name = 'x' WHERE id = $1", [a.contactId]),
    ).rejects.toMatchObject({ code: "42501" });
    await expect(db.query("SELECT count(*) FROM console_audit")).rejects.toMatchObject({ code: "42501" });
    // without a tenant, RLS shows the console no contact at all
    expect((await db.query("SELECT count(*)::int AS n FROM crm_contacts")).rows[0].n).toBe(0);
  });
});

describe("operator claim", () => {
  const tokenWith = (appMetadata: Record<string, unknown>) =>
    new SignJWT({ role: "authenticated", app_metadata: appMetadata })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(randomUUID())
      .setAudience("authenticated")
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(env.jwtSecret));

  it("makes a verified user with the claim an operator, and nobody else", async () => {
    tokens.claimed = await tokenWith({ crm_operator: true });
    tokens.unclaimed = await tokenWith({ crm_operator: "true" });
    expect((await call("claimed", `/api/contacts/${b.contactId}`)).status).toBe(200);
    expect((await call("unclaimed", `/api/contacts/${b.contactId}`)).status).toBe(403);
    await post("claimed", `/api/contacts/${a.contactId}/reveal`, { field: "phone" });
    const { rows } = await admin.query(
      "SELECT actor FROM console_audit WHERE contact_id = $1 AND target = 'reveal:phone'",
      [a.contactId],
    );
    expect(rows.map((r) => r.actor)).toEqual([expect.stringMatching(/^operator:[0-9a-f-]{36}$/)]);
  });
});

describe("search", () => {
  it("finds a phone written in the national format of the contact's business's country", async () => {
    const { businessId, ownerId } = await createBusiness(admin, { country: "GB" });
    const contactId = randomUUID();
    const phone = `+447911${String(100_000 + Math.floor(Math.random() * 899_999))}`;
    await admin.query(
      "INSERT INTO crm_contacts (id, business_id, phone, first_seen_at, last_seen_at) VALUES ($1, $2, $3, now(), now())",
      [contactId, businessId, phone],
    );
    await admin.query(
      "INSERT INTO contact_identities (business_id, type, value, contact_id) VALUES ($1, 'phone', $2, $3)",
      [businessId, phone, contactId],
    );
    tokens.ownerGb = await signUserToken(env.jwtSecret, ownerId);
    const national = `0${phone.slice(3, 7)} ${phone.slice(7)}`;
    for (const who of ["operator", "ownerGb"]) {
      const res = await call(who, `/api/contacts?q=${encodeURIComponent(national)}`);
      expect(
        ((await res.json()) as { hits: { contact_id: string }[] }).hits.map((h) => h.contact_id),
      ).toEqual([contactId]);
    }
    const other = await call("ownerA", `/api/contacts?q=${encodeURIComponent(national)}`);
    expect(((await other.json()) as { hits: unknown[] }).hits).toEqual([]);
  });
});

describe("sessions", () => {
  async function signIn(token: string) {
    const res = await app.request("/sign-in", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token, next: "/dead-letters" }),
    });
    return res;
  }

  it("issues an HttpOnly SameSite=Strict cookie and requires the page's CSRF token on POSTs", async () => {
    const res = await signIn(tokens.ownerA!);
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/dead-letters");
    const setCookie = res.headers.get("set-cookie") ?? "";
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    const cookie = setCookie.split(";")[0]!;
    const pageRes = await app.request("/dead-letters", { headers: { cookie } });
    expect(pageRes.status).toBe(200);
    const csrf = /name="csrf-token" content="([^"]+)"/.exec(await pageRes.text())?.[1];
    expect(csrf).toBeTruthy();
    const form = (extra: Record<string, string>) =>
      app.request("/dead-letters/discard", {
        method: "POST",
        headers: { cookie, "content-type": "application/x-www-form-urlencoded", ...extra },
        body: new URLSearchParams({ ids: a.deadLetter, ...(extra._csrf ? { _csrf: extra._csrf } : {}) }),
      });
    expect((await form({})).status).toBe(403);
    expect((await form({ _csrf: "forged" })).status).toBe(403);
    expect((await form({ origin: "https://evil.example", _csrf: csrf! })).status).toBe(403);
    expect((await form({ _csrf: csrf! })).status).toBe(303);
    // another business's dead letter stays out of reach with a valid session and token
    const foreign = await app.request("/dead-letters/discard", {
      method: "POST",
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ ids: b.deadLetter, _csrf: csrf! }),
    });
    expect(foreign.status).toBe(404);
  });

  it("refuses forged, edited and wrong credentials", async () => {
    const res = await signIn(tokens.operator!);
    const cookie = (res.headers.get("set-cookie") ?? "").split(";")[0]!;
    const [name, value] = cookie.split("=");
    const [payload, signature] = value!.split(".");
    const edited = Buffer.from(JSON.stringify({ p: "op", e: 4_102_444_800, n: "x" })).toString("base64url");
    for (const forged of [`${edited}.${signature}`, `${payload}.x${signature}`, `${payload}`, ""]) {
      const r = await app.request("/api/overview", { headers: { cookie: `${name}=${forged}` } });
      expect(r.status).toBe(401);
    }
    expect((await signIn("op_wrong")).status).toBe(401);
    expect((await signIn(tokens.stranger!)).status).toBe(401);
  });
});

/** Percent-encodes the UTF-8 bytes of any string (lone surrogates included: they become U+FFFD). */
const pct = (text: string) =>
  [...Buffer.from(text, "utf8")].map((x) => `%${x.toString(16).padStart(2, "0")}`).join("");

describe("hostile input", () => {
  const expectShape = async (res: Response, allowed: number[]) => {
    expect(allowed).toContain(res.status);
    const text = await res.text();
    if (res.headers.get("content-type")?.includes("json")) {
      const body = JSON.parse(text);
      expect(typeof body.ok).toBe("boolean");
      if (!body.ok) expect(body.error.code).toEqual(expect.any(String));
    }
  };

  it("any search string: results or 400, never an error", async () => {
    await fc.assert(
      fc.asyncProperty(hostileString, fc.string({ unit: "grapheme", maxLength: 400 }), async (q, long) => {
        for (const who of ["operator", "ownerB"]) {
          await expectShape(await call(who, `/api/contacts?q=${pct(q)}`), [200]);
          await expectShape(await call(who, `/api/contacts?q=${pct(long.repeat(2))}`), [200, 400]);
          await expectShape(await call(who, `/contacts?q=${pct(q)}`), [200]);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("any contact id or topic name in a path: 404, never an error", async () => {
    await fc.assert(
      fc.asyncProperty(hostileString, async (segment) => {
        await expectShape(await call("operator", `/api/contacts/${pct(segment)}`), [404]);
        await expectShape(await call("operator", `/api/topics/${pct(segment)}/messages`), [404]);
      }),
      { numRuns: RUNS },
    );
  });

  it("any body to replay, discard and reveal: 400 or 404, nothing replayed or recorded", async () => {
    const before = Number((await admin.query("SELECT count(*) FROM console_audit")).rows[0].count);
    const body = fc.oneof(
      tree.map((value) => JSON.stringify(value) ?? "null"),
      tree.map((ids) => JSON.stringify({ ids })),
      fc.array(hostileString, { minLength: 1, maxLength: 3 }).map((ids) => JSON.stringify({ ids })),
      tree.map((field) => JSON.stringify({ field })),
      rawText(a.businessId),
    );
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        for (const path of [
          "/api/dead-letters/replay",
          "/api/dead-letters/discard",
          `/api/contacts/${b.contactId}/reveal`,
        ]) {
          await expectShape(await call("ownerA", path, { method: "POST", body: text }), [400, 404]);
        }
      }),
      { numRuns: RUNS },
    );
    expect(Number((await admin.query("SELECT count(*) FROM console_audit")).rows[0].count)).toBe(before);
  });

  it("any browse parameters: messages or an empty page, never an error", async () => {
    await fc.assert(
      fc.asyncProperty(hostileString, hostileString, hostileString, hostileString, async (p, o, k, l) => {
        const res = await call(
          "operator",
          `/api/topics/${topics.dlqTopic}/messages?partition=${pct(p)}&offset=${pct(o)}&key=${pct(k)}&limit=${pct(l)}`,
        );
        await expectShape(res, [200]);
      }),
      // each browse is a short-lived consumer group: a few runs say what they need to
      { numRuns: Math.min(RUNS, 40) },
    );
  });

  it("any sign-in form: the form again with 401, never a session", async () => {
    await fc.assert(
      fc.asyncProperty(hostileString, hostileString, async (token, next) => {
        const res = await app.request("/sign-in", {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: `token=${pct(token)}&next=${pct(next)}`,
        });
        expect(res.status).toBe(401);
        expect(res.headers.get("set-cookie")).toBeNull();
      }),
      { numRuns: RUNS },
    );
  });
});
