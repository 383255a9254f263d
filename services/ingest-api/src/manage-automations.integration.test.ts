import { randomUUID } from "node:crypto";
import { deploymentKey } from "@crm/automations";
import { runAutomations } from "@crm/automations/cli";
import { stackEnv } from "@crm/config";
import { createBusiness, signUserToken, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runIngestKeys } from "./ingest-keys-cli.ts";
import { startTestApi, type TestApi } from "./test-harness.ts";

// The management API of automations (issue 17) on the real stack: endpoints (secret shown once, owner only),
// triggers, the delivery log and replay; the tenant matrix; arbitrary input that must never be a 5xx.
describe("management API: automations", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let api: TestApi;
  let a: { businessId: string; ownerId: string };
  let b: { businessId: string; ownerId: string };
  const memberOfA = randomUUID();
  let ownerA: string;
  let teamA: string;
  let ownerB: string;
  let keyA: string;

  async function call(
    method: string,
    path: string,
    token: string | undefined,
    body?: unknown,
    // biome-ignore lint/suspicious/noExplicitAny: tests assert response bodies field by field
  ): Promise<{ status: number; body: any }> {
    const res = await api.app.request(path, {
      method,
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed };
  }
  const ok = (res: { status: number; body: unknown }, status = 200) => {
    expect(res.status, JSON.stringify(res.body)).toBe(status);
    // biome-ignore lint/suspicious/noExplicitAny: response bodies
    return res.body as any;
  };

  /** A delivery of business `businessId` with one attempt, written as the service would (admin role here). */
  async function seedDelivery(
    businessId: string,
    endpointId: string,
    triggerId: string,
    status = "succeeded",
  ) {
    const contact = randomUUID();
    await admin.query(
      "INSERT INTO crm_contacts (id, business_id, first_seen_at, last_seen_at) VALUES ($1, $2, now(), now())",
      [contact, businessId],
    );
    const message = randomUUID();
    await admin.query(
      `INSERT INTO automation_messages (id, business_id, trigger_id, contact_id, event_type, cause_id, payload)
       VALUES ($1, $2, $3, $4, 'contact.created', 'test', '{"type":"contact.created"}')`,
      [message, businessId, triggerId, contact],
    );
    const { rows } = await admin.query(
      // a queue no automations instance serves: a replayed delivery stays pending here
      `INSERT INTO automation_deliveries (business_id, message_id, endpoint_id, status, attempts, last_status_code, queue)
       VALUES ($1, $2, $3, $4, 1, 200, 'manage-test') RETURNING id`,
      [businessId, message, endpointId, status],
    );
    await admin.query(
      `INSERT INTO automation_attempts (business_id, delivery_id, attempt, started_at, duration_ms, outcome, status_code)
       VALUES ($1, $2, 1, now(), 12, 'succeeded', 200)`,
      [businessId, rows[0].id],
    );
    return rows[0].id as string;
  }

  beforeAll(async () => {
    api = await startTestApi({ tenantCacheMs: 1_000 });
    a = await createBusiness(admin, { team: [memberOfA] });
    b = await createBusiness(admin);
    [ownerA, teamA, ownerB] = await Promise.all([
      signUserToken(env.jwtSecret, a.ownerId),
      signUserToken(env.jwtSecret, memberOfA),
      signUserToken(env.jwtSecret, b.ownerId),
    ]);
    const printed: string[] = [];
    await runIngestKeys(["create", a.businessId], admin, (line) => printed.push(line));
    keyA = printed.join("\n").match(/ik_[\w-]+/)![0];
  });

  afterAll(async () => {
    await api?.close();
    await admin.end();
  });

  it("endpoints: the owner creates (secret shown once, sealed at rest) and rotates; team members list, read and toggle", async () => {
    const created = ok(
      await call("POST", "/v1/manage/automations/endpoints", ownerA, {
        url: "https://hooks.example.com/crm",
        event_types: ["contact.created", "segment.entered"],
        description: "sales",
      }),
      201,
    );
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(created.endpoint).toMatchObject({ url: "https://hooks.example.com/crm", enabled: true });
    expect(JSON.stringify(created.endpoint)).not.toContain("whsec_");
    const stored = await admin.query("SELECT secret_sealed FROM automation_endpoints WHERE id = $1", [
      created.endpoint.id,
    ]);
    expect(stored.rows[0].secret_sealed).not.toContain(created.secret.slice(6));
    const id = created.endpoint.id;

    const refused = await call("POST", "/v1/manage/automations/endpoints", teamA, {
      url: "https://x.example",
    });
    expect(refused).toMatchObject({ status: 403, body: { ok: false, error: { code: "owner_required" } } });
    expect((await call("POST", `/v1/manage/automations/endpoints/${id}/rotate-secret`, teamA)).status).toBe(
      403,
    );
    expect((await call("DELETE", `/v1/manage/automations/endpoints/${id}`, teamA)).status).toBe(403);

    const listed = ok(await call("GET", "/v1/manage/automations/endpoints", teamA));
    expect(listed.endpoints.map((e: { id: string }) => e.id)).toContain(id);
    expect(JSON.stringify(listed)).not.toContain("whsec_");
    const disabled = ok(
      await call("PATCH", `/v1/manage/automations/endpoints/${id}`, teamA, { enabled: false }),
    );
    expect(disabled.endpoint).toMatchObject({ enabled: false, disabled_reason: "manual" });
    const enabled = ok(
      await call("PATCH", `/v1/manage/automations/endpoints/${id}`, teamA, { enabled: true }),
    );
    expect(enabled.endpoint).toMatchObject({ enabled: true, disabled_reason: null });

    const rotated = ok(
      await call("POST", `/v1/manage/automations/endpoints/${id}/rotate-secret`, ownerA, {
        overlap_seconds: 600,
      }),
    );
    expect(rotated.secret).toMatch(/^whsec_/);
    expect(rotated.secret).not.toBe(created.secret);
    expect(Date.parse(rotated.endpoint.previous_secret_expires_at)).toBeGreaterThan(Date.now() + 500_000);

    for (const url of [
      "ftp://x.example/",
      "not a url",
      "https://user:pw@x.example/",
      "http://x\u0000.example/",
    ]) {
      const bad = await call("POST", "/v1/manage/automations/endpoints", ownerA, { url });
      expect(bad).toMatchObject({ status: 400, body: { error: { code: "invalid_request" } } });
      expect(bad.body.error.issues[0].path).toEqual(["url"]);
    }
    const badType = await call("POST", "/v1/manage/automations/endpoints", ownerA, {
      url: "https://x.example",
      event_types: ["nope"],
    });
    expect(badType.status).toBe(400);
    ok(await call("DELETE", `/v1/manage/automations/endpoints/${id}`, ownerA));
    expect((await call("GET", `/v1/manage/automations/endpoints/${id}`, ownerA)).status).toBe(404);
  });

  it("triggers: every kind, options and filters reuse the segment rule language; bad ones are 400 naming the field", async () => {
    const { rows } = await admin.query(
      `INSERT INTO segment_definitions (business_id, name, definition) VALUES ($1, 's', '{"no_event":{"type":"login","last_days":14}}') RETURNING id`,
      [a.businessId],
    );
    const ons = [
      { kind: "contact.created" },
      { kind: "contact.changed", field: "traits.plan", to: "pro" },
      { kind: "contact.changed", field: "email" },
      { kind: "contact.merged" },
      { kind: "segment.entered", segment_id: rows[0].id },
      { kind: "segment.exited", segment_id: rows[0].id },
      { kind: "event", type: "purchase", where: [{ property: "amount", op: ">", value: 500 }] },
    ];
    for (const on of ons) {
      const made = ok(
        await call("POST", "/v1/manage/automations/triggers", teamA, {
          name: `t ${on.kind}`,
          on,
          once_per_contact: true,
          delay_seconds: 600,
          contact_filter: { all: [{ contact: { field: "email", op: "exists" } }] },
        }),
        201,
      );
      expect(made.trigger).toMatchObject({ on, once_per_contact: true, delay_seconds: 600, enabled: true });
    }
    const bad: Array<[unknown, string[]]> = [
      [{ kind: "contact.changed", field: "password" }, ["on", "field"]],
      [{ kind: "contact.changed", field: "traits.x", to: { a: 1 } }, ["on", "to"]],
      [{ kind: "event", type: "", where: [] }, ["on", "type"]],
      [
        { kind: "event", type: "p", where: [{ property: "a", op: "before", value: "x" }] },
        ["on", "where", "0", "op"],
      ],
      [{ kind: "segment.entered", segment_id: randomUUID() }, ["on", "segment_id"]],
      [{ kind: "nope" }, ["on", "kind"]],
    ];
    for (const [on, path] of bad) {
      const res = await call("POST", "/v1/manage/automations/triggers", ownerA, { name: "x", on });
      expect(res.status, JSON.stringify([on, res.body])).toBe(400);
      expect(
        res.body.error.issues.map((i: { path: string[] }) => i.path.slice(0, path.length)),
      ).toContainEqual(path);
    }
    const eventFilter = await call("POST", "/v1/manage/automations/triggers", ownerA, {
      name: "x",
      on: { kind: "contact.created" },
      contact_filter: { event: { type: "x", window: { last_days: 1 }, measure: "count", op: ">", value: 1 } },
    });
    expect(eventFilter.status).toBe(400);
    expect(eventFilter.body.error.issues[0].path).toEqual(["contact_filter", "event"]);

    const listed = ok(await call("GET", "/v1/manage/automations/triggers", teamA));
    const first = listed.triggers[0];
    const patched = ok(
      await call("PATCH", `/v1/manage/automations/triggers/${first.id}`, teamA, {
        enabled: false,
        contact_filter: null,
      }),
    );
    expect(patched.trigger).toMatchObject({ enabled: false, contact_filter: null, name: first.name });
    ok(await call("DELETE", `/v1/manage/automations/triggers/${first.id}`, teamA));
    expect((await call("GET", `/v1/manage/automations/triggers/${first.id}`, teamA)).status).toBe(404);
  });

  it("the delivery log lists deliveries with their attempts; replay restarts a finished one with the same message", async () => {
    const endpoint = ok(
      await call("POST", "/v1/manage/automations/endpoints", ownerA, { url: "https://x.example/h" }),
      201,
    ).endpoint;
    const trigger = ok(
      await call("POST", "/v1/manage/automations/triggers", ownerA, {
        name: "d",
        on: { kind: "contact.created" },
      }),
      201,
    ).trigger;
    const deliveryId = await seedDelivery(a.businessId, endpoint.id, trigger.id);
    const listed = ok(
      await call("GET", `/v1/manage/automations/deliveries?endpoint_id=${endpoint.id}`, teamA),
    );
    expect(listed.deliveries).toHaveLength(1);
    expect(listed.deliveries[0]).toMatchObject({
      id: deliveryId,
      status: "succeeded",
      attempts: 1,
      trigger_id: trigger.id,
    });
    const one = ok(await call("GET", `/v1/manage/automations/deliveries/${deliveryId}`, teamA));
    expect(one.delivery.attempt_log).toEqual([
      expect.objectContaining({ attempt: 1, outcome: "succeeded", status_code: 200 }),
    ]);
    const replayed = ok(await call("POST", `/v1/manage/automations/deliveries/${deliveryId}/replay`, teamA));
    expect(replayed.delivery).toMatchObject({
      id: deliveryId,
      status: "pending",
      message_id: one.delivery.message_id,
    });
    const again = await call("POST", `/v1/manage/automations/deliveries/${deliveryId}/replay`, teamA);
    expect(again).toMatchObject({ status: 409, body: { error: { code: "delivery_pending" } } });
    expect((await call("GET", "/v1/manage/automations/deliveries?status=bogus", teamA)).status).toBe(400);
    expect((await call("GET", "/v1/manage/automations/deliveries?limit=0", teamA)).status).toBe(400);
  });

  it("keeps tenants apart: A's owner and team can neither read nor change B's endpoints, triggers or deliveries", async () => {
    const endpoint = ok(
      await call("POST", "/v1/manage/automations/endpoints", ownerB, {
        url: "https://b.example/secret-hook",
      }),
      201,
    ).endpoint;
    const trigger = ok(
      await call("POST", "/v1/manage/automations/triggers", ownerB, {
        name: "B's trigger",
        on: { kind: "contact.created" },
      }),
      201,
    ).trigger;
    const delivery = await seedDelivery(b.businessId, endpoint.id, trigger.id);
    const e = `/v1/manage/automations/endpoints/${endpoint.id}`;
    const t = `/v1/manage/automations/triggers/${trigger.id}`;
    const d = `/v1/manage/automations/deliveries/${delivery}`;
    const named = { business_id: b.businessId };
    for (const token of [ownerA, teamA]) {
      const matrix: Array<[string, string, unknown, number[]]> = [
        ["GET", e, undefined, [404]],
        ["GET", `${e}?business_id=${b.businessId}`, undefined, [403]],
        ["PATCH", e, { enabled: false }, [404]],
        ["PATCH", e, { url: "https://evil.example", ...named }, [403]],
        ["POST", `${e}/rotate-secret`, {}, [403, 404]],
        ["POST", `${e}/rotate-secret`, named, [403]],
        ["DELETE", e, undefined, [403, 404]],
        ["DELETE", `${e}?business_id=${b.businessId}`, undefined, [403]],
        ["GET", `/v1/manage/automations/endpoints?business_id=${b.businessId}`, undefined, [403]],
        ["POST", "/v1/manage/automations/endpoints", { url: "https://x.example", ...named }, [403]],
        ["GET", t, undefined, [404]],
        ["PATCH", t, { name: "stolen" }, [404]],
        ["PATCH", t, { name: "stolen", ...named }, [403]],
        ["DELETE", t, undefined, [404]],
        [
          "POST",
          "/v1/manage/automations/triggers",
          { name: "n", on: { kind: "contact.created" }, ...named },
          [403],
        ],
        ["GET", d, undefined, [404]],
        ["GET", `${d}?business_id=${b.businessId}`, undefined, [403]],
        ["POST", `${d}/replay`, undefined, [404]],
        ["POST", `${d}/replay`, named, [403]],
        ["GET", `/v1/manage/automations/deliveries?business_id=${b.businessId}`, undefined, [403]],
      ];
      for (const [method, path, body, statuses] of matrix) {
        const res = await call(method, path, token, body);
        expect(statuses, `${method} ${path} ${JSON.stringify(body)}`).toContain(res.status);
        expect(res.body.ok).toBe(false);
        expect(JSON.stringify(res.body)).not.toContain("secret-hook");
        expect(JSON.stringify(res.body)).not.toContain("B's trigger");
      }
      for (const path of ["endpoints", "triggers", "deliveries"]) {
        const listed = ok(await call("GET", `/v1/manage/automations/${path}`, token));
        expect(JSON.stringify(listed)).not.toContain(b.businessId);
      }
      // a trigger of A naming B's segment is refused as unknown
      const { rows } = await admin.query(
        `INSERT INTO segment_definitions (business_id, name, definition) VALUES ($1, 'b', '{"no_event":{"type":"x","last_days":1}}') RETURNING id`,
        [b.businessId],
      );
      const naming = await call("POST", "/v1/manage/automations/triggers", token, {
        name: "n",
        on: { kind: "segment.entered", segment_id: rows[0].id },
      });
      expect(naming.status).toBe(400);
    }
    const { rows } = await admin.query("SELECT url, enabled FROM automation_endpoints WHERE id = $1", [
      endpoint.id,
    ]);
    expect(rows).toEqual([{ url: "https://b.example/secret-hook", enabled: true }]);
    expect(
      (await admin.query("SELECT status FROM automation_deliveries WHERE id = $1", [delivery])).rows[0]
        .status,
    ).toBe("succeeded");
    expect((await call("GET", "/v1/manage/automations/endpoints", keyA)).body.error.code).toBe(
      "user_token_required",
    );
    expect((await call("GET", "/v1/manage/automations/triggers", undefined)).status).toBe(401);
    const stranger = await signUserToken(env.jwtSecret, randomUUID());
    expect((await call("GET", "/v1/manage/automations/deliveries", stranger)).status).toBe(403);
  });

  it("in the database, the service role sees no automation row without a tenant", async () => {
    const client = await api.pool.connect();
    try {
      for (const table of [
        "automation_endpoints",
        "automation_triggers",
        "automation_messages",
        "automation_deliveries",
        "automation_attempts",
        "automation_trigger_contacts",
      ]) {
        expect((await client.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n, table).toBe(0);
      }
    } finally {
      client.release();
    }
  });

  it("answers arbitrary methods, paths and JSON with 2xx or 4xx in the SPEC 4 shape, never 5xx", async () => {
    const text = fc.string({ unit: "binary", maxLength: 30 });
    const anyId = fc.oneof(fc.uuid(), text.map(encodeURIComponent));
    const anyOn = fc.oneof(
      fc.record({
        kind: fc.constantFrom(...["contact.created", "contact.changed", "event", "segment.entered", "x"]),
      }),
      fc.record({ kind: fc.constant("contact.changed"), field: text, to: fc.jsonValue() }),
      fc.record({ kind: fc.constant("segment.exited"), segment_id: fc.oneof(fc.uuid(), text) }),
      fc.record({
        kind: fc.constant("event"),
        type: text,
        where: fc.oneof(
          fc.jsonValue(),
          fc.array(
            fc.record({
              property: text,
              op: fc.constantFrom("=", "in", ">", "exists", "x"),
              value: fc.jsonValue(),
            }),
          ),
        ),
      }),
    );
    const anyBody = fc.oneof(
      fc.jsonValue(),
      text,
      fc.record(
        { url: fc.oneof(text, fc.webUrl()), event_types: fc.jsonValue(), description: text },
        { requiredKeys: [] },
      ),
      fc.record(
        {
          name: text,
          on: anyOn,
          contact_filter: fc.oneof(
            fc.jsonValue(),
            fc.record({ contact: fc.record({ field: text, op: text, value: fc.jsonValue() }) }),
          ),
          once_per_contact: fc.jsonValue(),
          delay_seconds: fc.oneof(fc.integer(), fc.double()),
          enabled: fc.jsonValue(),
          business_id: fc.oneof(fc.uuid(), text),
          overlap_seconds: fc.integer(),
        },
        { requiredKeys: [] },
      ),
    );
    const anyPath = fc.oneof(
      fc.constantFrom("endpoints", "triggers", "deliveries").map((p) => `/v1/manage/automations/${p}`),
      fc
        .tuple(fc.constantFrom("endpoints", "triggers", "deliveries"), anyId)
        .map(([p, id]) => `/v1/manage/automations/${p}/${id}`),
      anyId.map((id) => `/v1/manage/automations/endpoints/${id}/rotate-secret`),
      anyId.map((id) => `/v1/manage/automations/deliveries/${id}/replay`),
      fc
        .tuple(text, text, text)
        .map(
          ([s, l, e]) =>
            `/v1/manage/automations/deliveries?status=${encodeURIComponent(s)}&limit=${encodeURIComponent(l)}&endpoint_id=${encodeURIComponent(e)}&business_id=${encodeURIComponent(s)}`,
        ),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PATCH", "DELETE"),
        anyPath,
        anyBody,
        fc.constantFrom(ownerA, teamA),
        async (method, path, body, token) => {
          const res = await call(method, path, token, method === "GET" ? undefined : body);
          expect(
            res.status,
            `${method} ${path} ${JSON.stringify(body)} -> ${JSON.stringify(res.body)}`,
          ).toBeLessThan(500);
          if (res.status >= 400) {
            expect(res.body).toMatchObject({
              ok: false,
              error: { code: expect.any(String), message: expect.any(String) },
            });
          }
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 300) },
    );
  });

  it("describes the automations API in /openapi.json from the validators", async () => {
    const doc = (await call("GET", "/openapi.json", undefined)).body;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/v1/manage/automations/endpoints",
        "/v1/manage/automations/deliveries/{id}/replay",
      ]),
    );
    expect(doc.components.schemas.CreateTriggerBody.properties.on).toBeDefined();
  });

  it("the operator CLI applies the same checks, scoped to the business named", async () => {
    const printed: string[] = [];
    const print = (line: string) => printed.push(line);
    const key = deploymentKey(stackEnv().AUTOMATIONS_SECRET_KEY!);
    expect(
      await runAutomations(["endpoints", "create", a.businessId, "https://cli.example/h"], admin, key, print),
    ).toBe(0);
    const made = JSON.parse(printed.pop()!);
    expect(made.secret).toMatch(/^whsec_/);
    expect(
      await runAutomations(["endpoints", "rotate", b.businessId, made.endpoint.id], admin, key, print),
    ).toBe(1);
    expect(printed.pop()).toMatch(/not_found/);
    expect(
      await runAutomations(
        [
          "triggers",
          "create",
          a.businessId,
          "cli",
          '{"kind":"contact.changed","field":"traits.plan"}',
          "--once",
        ],
        admin,
        key,
        print,
      ),
    ).toBe(0);
    expect(JSON.parse(printed.pop()!)).toMatchObject({
      once_per_contact: true,
      on: { field: "traits.plan" },
    });
    expect(
      await runAutomations(["triggers", "create", a.businessId, "x", '{"kind":"event"}'], admin, key, print),
    ).toBe(1);
    expect(
      await runAutomations(["deliveries", "list", a.businessId, "--status", "pending"], admin, key, print),
    ).toBe(0);
    expect(await runAutomations(["nope"], admin, key, print)).toBe(2);
  });
});
