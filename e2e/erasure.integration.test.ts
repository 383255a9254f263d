import { randomUUID } from "node:crypto";
import { ContactConsumer, type ContactErasure } from "@crm/contact-consumer";
import { createKafka, TOPICS } from "@crm/kafka";
import { connectorSpec, pruneOutbox } from "@crm/outbox-connector";
import { poll } from "@crm/process";
import {
  consumerGroupAtTopicEnd,
  createBusiness,
  freePort,
  type RunningService,
  signUserToken,
  startService,
  TopicProbe,
  testEnv,
} from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostileString, tree } from "./hostile-arbitraries.ts";

// Issue 18 on the real processes: ingest-api (HTTP) -> a private raw topic -> resolver-worker -> Postgres ->
// Debezium -> contact.updated.v1 -> the consumer kit; erasure through the management API, then a late event, a
// replay of the raw topic into a fresh consumer group, and the lift of the suppression.
describe("erasure and suppression (issue 18)", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 3 });
  const suffix = randomUUID().slice(0, 8);
  const rawTopic = `events.raw.v1.test-erasure-${suffix}`;
  const dlqTopic = `events.dlq.v1.test-erasure-${suffix}`;
  let api: RunningService;
  let worker: RunningService;
  let workerPort: number;
  let replayWorker: RunningService | undefined;
  let updates: TopicProbe;
  let kit: ContactConsumer;
  const erasures: ContactErasure[] = [];

  let a: { businessId: string; ownerId: string };
  let b: { businessId: string; ownerId: string };
  const memberOfA = randomUUID();
  let ownerA: string;
  let teamA: string;
  let ownerB: string;

  // the person to erase, and another one of the same business who must stay
  const p = {
    ext: `p-ext-${suffix}`,
    email: `p.${suffix}@example.com`,
    // a number of this run only: the scan looks at every row of the database, other tests' included
    phone: `+1415555${String(Number.parseInt(suffix.slice(0, 4), 16) % 10_000).padStart(4, "0")}`,
    anon: `p-anon-${suffix}`,
  };
  const q = { ext: `q-ext-${suffix}`, email: `q.${suffix}@example.com` };
  const pEventIds: string[] = [];
  const qEventIds: string[] = [];

  async function request(method: string, path: string, token: string | undefined, body?: unknown) {
    const res = await fetch(`${api.url}${path}`, {
      method,
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    // biome-ignore lint/suspicious/noExplicitAny: tests assert response bodies field by field
    return { status: res.status, body: parsed as any };
  }

  /** Sends one event through the API and waits until the worker applied it (or, `dropped`, until it was counted). */
  async function track(contact: Record<string, string>, props: Record<string, unknown> = {}) {
    const res = await request("POST", "/v1/track", ownerA, {
      type: "test",
      business_id: a.businessId,
      contact,
      props,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    return res.body.event_id as string;
  }
  const applied = (eventId: string) =>
    poll(
      `event ${eventId} applied`,
      async () => (await admin.query("SELECT contact_id FROM crm_events WHERE id = $1", [eventId])).rows[0],
      { timeoutMs: 60_000 },
    );
  const metric = async (port: number, name: string) => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(" ")[1]) : 0;
  };

  beforeAll(async () => {
    const kafkaAdmin = createKafka({ brokers: env.brokers, clientId: "erasure-test" }).admin();
    await kafkaAdmin.connect();
    await kafkaAdmin.createTopics({
      waitForLeaders: true,
      topics: [
        { topic: rawTopic, numPartitions: 3 },
        { topic: dlqTopic, numPartitions: 1 },
      ],
    });
    await kafkaAdmin.disconnect();
    a = await createBusiness(admin, { team: [memberOfA] });
    b = await createBusiness(admin);
    [ownerA, teamA, ownerB] = await Promise.all([
      signUserToken(env.jwtSecret, a.ownerId),
      signUserToken(env.jwtSecret, memberOfA),
      signUserToken(env.jwtSecret, b.ownerId),
    ]);
    updates = await new TopicProbe(env.brokers, TOPICS.contactUpdated).start();
    kit = new ContactConsumer({
      kafka: env.brokers,
      groupId: await consumerGroupAtTopicEnd(env.brokers, TOPICS.contactUpdated, "erasure-kit"),
      onChange: () => {},
      onErase: (erasure) => {
        if (erasure.businessId === a.businessId) erasures.push(erasure);
      },
    });
    await kit.start();
    const apiPort = await freePort();
    workerPort = await freePort();
    [api, worker] = await Promise.all([
      startService({
        entry: "services/ingest-api/src/main.ts",
        env: { INGEST_PORT: String(apiPort), INGEST_TOPIC: rawTopic, RATE_LIMIT_USER_PER_SEC: "1000" },
        healthUrl: `http://127.0.0.1:${apiPort}/healthz`,
      }),
      startWorker(workerPort, `resolver-worker-test-erasure-${suffix}`),
    ]);
  }, 120_000);

  function startWorker(port: number, groupId: string) {
    return startService({
      entry: "services/resolver-worker/src/main.ts",
      env: {
        WORKER_PORT: String(port),
        WORKER_TOPIC: rawTopic,
        WORKER_DLQ_TOPIC: dlqTopic,
        WORKER_GROUP_ID: groupId,
        WORKER_COMMIT_INTERVAL_MS: "500",
      },
      healthUrl: `http://127.0.0.1:${port}/readyz`,
    });
  }

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop(), replayWorker?.stop(), updates?.stop(), kit?.stop()]);
    const kafkaAdmin = createKafka({ brokers: env.brokers, clientId: "erasure-test" }).admin();
    await kafkaAdmin.connect();
    await kafkaAdmin.deleteTopics({ topics: [rawTopic, dlqTopic] }).catch(() => {});
    await kafkaAdmin.disconnect();
    await admin.end();
  });

  /**
   * Every row of every table of the database (all schemas but the catalogs), every column whose text could hold
   * a value (text, varchar, json, jsonb, uuid, arrays), searched for each value: `table.column: value` per hit.
   * Tables that other areas add later are searched the same way.
   */
  async function rowsHolding(values: string[]): Promise<string[]> {
    const { rows: columns } = await admin.query<{ schema: string; table: string; column: string }>(
      `SELECT c.table_schema AS schema, c.table_name AS table, c.column_name AS column
       FROM information_schema.columns c
       JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
       WHERE t.table_type = 'BASE TABLE'
         AND c.table_schema NOT IN ('pg_catalog', 'information_schema') AND c.table_schema NOT LIKE 'pg_toast%'
         AND (c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'uuid', 'ARRAY')
              OR c.udt_name IN ('xml', 'citext'))`,
    );
    expect(columns.length).toBeGreaterThan(20);
    const hits: string[] = [];
    const patterns = values.map((v) => `%${v.toLowerCase().replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`);
    for (const { schema, table, column } of columns) {
      const { rows } = await admin.query<{ value: string }>(
        `SELECT pattern AS value FROM unnest($1::text[]) AS pattern
         WHERE EXISTS (SELECT 1 FROM ${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(table)} x
                       WHERE lower(x.${pg.escapeIdentifier(column)}::text) LIKE pattern)`,
        [patterns],
      );
      for (const row of rows) hits.push(`${schema}.${table}.${column}: ${row.value}`);
    }
    return hits;
  }

  it("erasing by email removes the person's merge tree and everything holding its ids or identifiers, streams `erased`, and the kit's erase handler gets it", async () => {
    // P arrives as three contacts (external_id, email + phone, anonymous) that later events merge into one
    pEventIds.push(await track({ external_id: p.ext, name: "Pat" }, { plan: "pro" }));
    await applied(pEventIds.at(-1)!);
    pEventIds.push(await track({ email: ` ${p.email.toUpperCase()} `, phone: p.phone }, { note: p.email }));
    await applied(pEventIds.at(-1)!);
    pEventIds.push(await track({ anonymous_id: p.anon }));
    await applied(pEventIds.at(-1)!);
    pEventIds.push(await track({ external_id: p.ext, email: p.email }));
    await applied(pEventIds.at(-1)!);
    pEventIds.push(await track({ email: p.email, anonymous_id: p.anon }, { traits_seen: true }));
    await applied(pEventIds.at(-1)!);
    // Q, and an event of Q that also carried P's email (a refused link: Q's event row keeps the email as sent)
    qEventIds.push(await track({ external_id: q.ext, email: q.email, name: "Quinn" }));
    await applied(qEventIds.at(-1)!);
    qEventIds.push(await track({ external_id: q.ext, email: p.email }));
    await applied(qEventIds.at(-1)!);
    // a Segment message the listener refused, which holds P's email as sent
    await admin.query(
      `INSERT INTO rejected_events (id, business_id, source, reason_code, reason, message)
       VALUES ($1, $2, 'segment', 'invalid_message', 'type: required', $3)`,
      [randomUUID(), a.businessId, JSON.stringify({ userId: p.ext, traits: { email: p.email } })],
    );

    const root = (
      await admin.query("SELECT contact_id FROM contact_identities WHERE business_id = $1 AND value = $2", [
        a.businessId,
        p.email,
      ])
    ).rows[0].contact_id as string;
    const { rows: treeRows } = await admin.query<{ id: string }>(
      `WITH RECURSIVE t (id) AS (SELECT $1::uuid UNION SELECT c.id FROM crm_contacts c JOIN t ON c.merged_into = t.id)
       SELECT id FROM t`,
      [root],
    );
    const tree = treeRows.map((r) => r.id);
    expect(tree.length).toBeGreaterThanOrEqual(3);
    const qContact = (await applied(qEventIds[0]!)).contact_id as string;
    expect(await rowsHolding([p.email])).not.toEqual([]);

    const res = await request("POST", "/v1/manage/erasures", ownerA, {
      business_id: a.businessId,
      email: `  ${p.email.toUpperCase()}`,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.erasure.contact_ids[0]).toBe(root);
    expect([...res.body.erasure.contact_ids].sort()).toEqual([...tree].sort());
    expect(res.body.erasure.counts).toMatchObject({
      contacts: tree.length,
      events: pEventIds.length,
      identities: 4,
      identity_conflicts: 1,
      scrubbed_events: 1,
      rejected_events: 1,
    });
    expect(res.body.erasure.counts.suppressed).toBeGreaterThanOrEqual(4);

    // `erased` on contact.updated.v1: ids only, keyed by the surviving contact
    const [message] = await updates.waitFor(
      (m) => m.headers.business_id === a.businessId && (m.value as { change?: string }).change === "erased",
      1,
      60_000,
    );
    expect(message!.key).toBe(root);
    expect(message!.headers.type).toBe("contact.erased");
    expect(message!.value).toMatchObject({
      contact_id: root,
      change: "erased",
      contact: {},
      identities: [],
      cause_event_id: res.body.erasure.id,
    });
    expect([root, ...((message!.value as { merged_from?: string[] }).merged_from ?? [])].sort()).toEqual(
      [...tree].sort(),
    );
    expect(JSON.stringify(message!.value)).not.toContain(p.email);
    const handled = await poll("the kit's erase handler", async () => erasures[0], { timeoutMs: 60_000 });
    expect(handled.contactIds.sort()).toEqual([...tree].sort());
    expect(handled.erasureId).toBe(res.body.erasure.id);

    // the outbox row of `erased` goes with pruning, once streamed (rows Debezium has confirmed)
    const slot = connectorSpec("postgres://x:y@localhost/crm").config["slot.name"]!;
    await poll(
      "the erased outbox row pruned",
      async () => {
        await pruneOutbox(admin, { slots: [slot], retentionMs: 0, businessId: a.businessId });
        const { rows } = await admin.query("SELECT 1 FROM outbox WHERE business_id = $1 AND type = $2", [
          a.businessId,
          "contact.erased",
        ]);
        return rows.length === 0 || undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );

    expect(await rowsHolding([p.ext, p.email, p.phone, p.anon, ...tree, ...pEventIds])).toEqual([]);
    // Q stays, with its own events; its event that carried P's email lost that field only
    const { rows: qEvents } = await admin.query(
      "SELECT id, contact FROM crm_events WHERE contact_id = $1 ORDER BY received_at",
      [qContact],
    );
    expect(qEvents.map((e) => e.id).sort()).toEqual([...qEventIds].sort());
    expect(qEvents.find((e) => e.id === qEventIds[1])!.contact).toEqual({ external_id: q.ext });

    // the audit: who, when, counts; no identifier
    const audit = await request("GET", `/v1/manage/erasures?business_id=${a.businessId}`, ownerA);
    expect(audit.status).toBe(200);
    expect(audit.body.erasures).toEqual([
      expect.objectContaining({
        id: res.body.erasure.id,
        action: "erase",
        actor: `user:${a.ownerId}`,
        requested_by: "email",
        counts: res.body.erasure.counts,
      }),
    ]);
    expect(JSON.stringify(audit.body)).not.toContain(p.email);
    expect(api.output() + worker.output()).not.toContain(p.email);
  }, 240_000);

  it("a late event for the erased email is dropped and counted, never stored", async () => {
    const before = await metric(workerPort, "resolver_events_suppressed_total");
    const late = await track({ email: p.email, name: "Pat again" });
    await poll(
      "the late event counted as suppressed",
      async () => (await metric(workerPort, "resolver_events_suppressed_total")) > before || undefined,
      { timeoutMs: 60_000 },
    );
    // a later event of Q on the same worker is applied: the dropped one did not block anything
    qEventIds.push(await track({ external_id: q.ext, name: "Quinn" }));
    await applied(qEventIds.at(-1)!);
    pEventIds.push(late);
    expect(await rowsHolding([p.email, late])).toEqual([]);
  }, 120_000);

  it("a replay of the raw topic from the beginning into a fresh consumer group rebuilds the others, never the erased person", async () => {
    const summary = async () =>
      (
        await admin.query<{ identities: string[]; name: string | null }>(
          `SELECT array_agg(i.type || ':' || i.value ORDER BY i.type, i.value) AS identities, c.name
           FROM crm_contacts c JOIN contact_identities i ON i.contact_id = c.id
           WHERE c.business_id = $1 AND c.merged_into IS NULL GROUP BY c.id, c.name ORDER BY 1`,
          [a.businessId],
        )
      ).rows;
    const expected = await summary();
    expect(expected).toEqual([{ identities: [`email:${q.email}`, `external_id:${q.ext}`], name: "Quinn" }]);
    // Start from nothing: the business's rows go (as an operator restoring from the topic would start), then a
    // worker in a new group reads the topic from its first offset.
    await worker.stop();
    const client = await admin.connect();
    try {
      await client.query("BEGIN");
      for (const sql of [
        "DELETE FROM outbox WHERE business_id = $1",
        "DELETE FROM identity_conflicts WHERE business_id = $1",
        "DELETE FROM crm_events WHERE business_id = $1",
        "DELETE FROM contact_identities WHERE business_id = $1",
        "UPDATE crm_contacts SET merged_into = NULL WHERE business_id = $1",
        "DELETE FROM crm_contacts WHERE business_id = $1",
      ]) {
        await client.query(sql, [a.businessId]);
      }
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    const port = await freePort();
    replayWorker = await startWorker(port, `resolver-worker-test-erasure-replay-${suffix}`);
    await poll(
      "Q's events re-applied",
      async () => {
        const { rows } = await admin.query(
          "SELECT count(*)::int AS n FROM crm_events WHERE id = ANY($1::uuid[])",
          [qEventIds],
        );
        // Q's second event carried P's email: it is dropped on replay like P's own
        return rows[0].n === qEventIds.length - 1 || undefined;
      },
      { timeoutMs: 90_000 },
    );
    await poll(
      "every event of P counted as suppressed",
      async () =>
        (await metric(port, "resolver_events_suppressed_total")) >= pEventIds.length + 1 || undefined,
      { timeoutMs: 60_000 },
    );
    expect(await summary()).toEqual(expected);
    expect(await rowsHolding([p.ext, p.email, p.phone, p.anon, ...pEventIds])).toEqual([]);
  }, 240_000);

  it("after the owner lifts the suppression, an event for the email is accepted again", async () => {
    const notOwner = await request("POST", "/v1/manage/suppressions/lift", teamA, {
      business_id: a.businessId,
      email: p.email,
    });
    expect(notOwner).toMatchObject({ status: 403, body: { ok: false, error: { code: "owner_required" } } });
    const lifted = await request("POST", "/v1/manage/suppressions/lift", ownerA, {
      business_id: a.businessId,
      email: p.email.toUpperCase(),
    });
    expect(lifted).toMatchObject({ status: 200, body: { ok: true, lifted: 1 } });
    const again = await request("POST", "/v1/manage/suppressions/lift", ownerA, {
      business_id: a.businessId,
      email: p.email,
    });
    expect(again).toMatchObject({ status: 404, body: { ok: false, error: { code: "not_found" } } });
    const back = await track({ email: p.email, name: "Pat, consenting" });
    const { contact_id } = await applied(back);
    const contact = (await admin.query("SELECT email, name FROM crm_contacts WHERE id = $1", [contact_id]))
      .rows[0];
    expect(contact).toEqual({ email: p.email, name: "Pat, consenting" });
    const audit = await request("GET", "/v1/manage/erasures", ownerA);
    expect(audit.body.erasures.map((e: { action: string }) => e.action)).toEqual([
      "lift_suppression",
      "erase",
    ]);
    expect(audit.body.erasures[0]).toMatchObject({ requested_by: "email", counts: { lifted: 1 } });
  }, 120_000);

  it("403 for a team member who is not the owner and for another business's owner; 401 without a token", async () => {
    const body = { business_id: a.businessId, external_id: q.ext };
    const member = await request("POST", "/v1/manage/erasures", teamA, body);
    expect(member).toMatchObject({ status: 403, body: { ok: false, error: { code: "owner_required" } } });
    const memberAudit = await request("GET", `/v1/manage/erasures?business_id=${a.businessId}`, teamA);
    expect(memberAudit.status).toBe(403);
    const other = await request("POST", "/v1/manage/erasures", ownerB, body);
    expect(other).toMatchObject({ status: 403, body: { ok: false, error: { code: "forbidden_business" } } });
    const otherById = await request("POST", "/v1/manage/erasures", ownerB, {
      business_id: b.businessId,
      contact_id: (
        await admin.query("SELECT id FROM crm_contacts WHERE business_id = $1 LIMIT 1", [a.businessId])
      ).rows[0].id,
    });
    expect(otherById).toMatchObject({ status: 404, body: { ok: false, error: { code: "not_found" } } });
    const otherAudit = await request("GET", `/v1/manage/erasures?business_id=${a.businessId}`, ownerB);
    expect(otherAudit.status).toBe(403);
    const otherLift = await request("POST", "/v1/manage/suppressions/lift", ownerB, {
      business_id: a.businessId,
      email: p.email,
    });
    expect(otherLift.status).toBe(403);
    expect((await request("POST", "/v1/manage/erasures", undefined, body)).status).toBe(401);
    // nothing of Q was touched by the refused requests
    const { rows } = await admin.query(
      "SELECT 1 FROM contact_identities WHERE business_id = $1 AND value = $2",
      [a.businessId, q.ext],
    );
    expect(rows).toHaveLength(1);
  });

  it("arbitrary Unicode and JSON on the erasure endpoints is never a 5xx, and every refusal has the error shape", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const owner = await signUserToken(env.jwtSecret, ownerId);
    const field = fc.constantFrom(
      "external_id",
      "email",
      "phone",
      "anonymous_id",
      "contact_id",
      "business_id",
      "x",
    );
    const body = fc.oneof(
      tree,
      fc.dictionary(field, fc.oneof(hostileString, tree), { maxKeys: 3 }),
      fc
        .dictionary(field, hostileString, { minKeys: 1, maxKeys: 1 })
        .map((d) => ({ business_id: businessId, ...d })),
    );
    const path = fc.oneof(
      fc.constantFrom("/v1/manage/erasures", "/v1/manage/suppressions/lift"),
      fc
        .string({ unit: "grapheme", maxLength: 40 })
        .map((s) => `/v1/manage/erasures?business_id=${encodeURIComponent(s)}`),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("GET", "POST"), path, body, async (method, url, json) => {
        const res = await request(method, url, owner, method === "GET" ? undefined : JSON.stringify(json));
        expect(
          res.status,
          `${method} ${url} ${JSON.stringify(json)} -> ${JSON.stringify(res.body)}`,
        ).toBeLessThan(500);
        if (res.status >= 400) {
          expect(res.body).toMatchObject({
            ok: false,
            error: { code: expect.any(String), message: expect.any(String) },
          });
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 150) },
    );
  }, 240_000);
});
