import { randomUUID } from "node:crypto";
import { runSegments } from "@crm/segment-definitions/cli";
import { createBusiness, signUserToken, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runIngestKeys } from "./ingest-keys-cli.ts";
import { startTestApi, type TestApi } from "./test-harness.ts";

// The management API of segment definitions (issue 16.1) on the real stack: lifecycle and versions, the tenant
// matrix, cycles, and arbitrary input that must never be a 5xx.
describe("management API: segment definitions", () => {
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

  const highValue = {
    event: {
      type: "purchase",
      window: { last_days: 30 },
      measure: "sum",
      property: "amount",
      op: ">",
      value: 500,
    },
  };

  async function call(
    method: string,
    path: string,
    token: string | undefined,
    body?: unknown,
    // biome-ignore lint/suspicious/noExplicitAny: tests assert response bodies field by field
  ): Promise<{ status: number; body: any }> {
    const res = await api.app.request(path, {
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
    return { status: res.status, body: parsed };
  }
  const create = async (token: string, name: string, definition: unknown, businessId?: string) => {
    const res = await call("POST", "/v1/manage/segments", token, {
      business_id: businessId,
      name,
      definition,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.segment as { id: string; version: number };
  };

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

  it("creates, lists, gets (member_count 0), updates and archives; every change is a version kept in the history", async () => {
    const created = await create(teamA, "  High value  ", highValue);
    expect(created).toMatchObject({ version: 1, name: "High value", status: "active", member_count: 0 });
    expect(created).toMatchObject({ business_id: a.businessId, definition: highValue });

    const listed = await call("GET", "/v1/manage/segments", ownerA);
    expect(listed.status).toBe(200);
    expect(listed.body.segments.map((s: { id: string }) => s.id)).toContain(created.id);

    const atRisk = { all: [{ no_event: { type: "login", last_days: 14 } }, { segment: created.id }] };
    const renamed = await call("PATCH", `/v1/manage/segments/${created.id}`, ownerA, {
      name: "Big spenders",
    });
    expect(renamed.body.segment).toMatchObject({ version: 2, name: "Big spenders", definition: highValue });
    const stale = await call("PATCH", `/v1/manage/segments/${created.id}`, ownerA, {
      name: "x",
      expected_version: 1,
    });
    expect(stale).toMatchObject({ status: 409, body: { ok: false, error: { code: "version_conflict" } } });
    const redefined = await call("PATCH", `/v1/manage/segments/${created.id}`, teamA, {
      definition: atRisk.all[0],
      expected_version: 2,
    });
    expect(redefined.body.segment).toMatchObject({ version: 3, definition: atRisk.all[0] });

    const archived = await call("POST", `/v1/manage/segments/${created.id}/archive`, ownerA);
    expect(archived.body.segment).toMatchObject({ version: 4, status: "archived" });
    expect(
      (await call("POST", `/v1/manage/segments/${created.id}/archive`, ownerA)).body.segment.version,
    ).toBe(4);
    const edit = await call("PATCH", `/v1/manage/segments/${created.id}`, ownerA, { name: "again" });
    expect(edit).toMatchObject({ status: 409, body: { error: { code: "segment_archived" } } });
    const referencing = await call("POST", "/v1/manage/segments", ownerA, { name: "r", definition: atRisk });
    expect(referencing).toMatchObject({ status: 400, body: { error: { code: "invalid_request" } } });
    expect(JSON.stringify(referencing.body.error.issues)).toContain("archived");

    const active = await call("GET", "/v1/manage/segments", ownerA);
    expect(active.body.segments.map((s: { id: string }) => s.id)).not.toContain(created.id);
    const all = await call("GET", "/v1/manage/segments?status=all", ownerA);
    expect(all.body.segments.map((s: { id: string }) => s.id)).toContain(created.id);

    const versions = await call("GET", `/v1/manage/segments/${created.id}/versions`, ownerA);
    expect(
      versions.body.versions.map((v: { version: number; name: string; status: string }) => [
        v.version,
        v.name,
        v.status,
      ]),
    ).toEqual([
      [1, "High value", "active"],
      [2, "Big spenders", "active"],
      [3, "Big spenders", "active"],
      [4, "Big spenders", "archived"],
    ]);
    expect(versions.body.versions[0]).toMatchObject({ definition: highValue, changed_by: memberOfA });
    expect(versions.body.versions[2]).toMatchObject({ definition: atRisk.all[0], changed_by: memberOfA });
  });

  it("refuses cycles through segment references, and archiving a segment another active one names", async () => {
    const base = await create(ownerA, "base", highValue);
    const middle = await create(ownerA, "middle", { any: [{ segment: base.id }, highValue] });
    const top = await create(ownerA, "top", { not: { segment: middle.id } });
    for (const [id, definition] of [
      [base.id, { segment: top.id }],
      [base.id, { all: [highValue, { not: { segment: middle.id.toUpperCase() } }] }],
      [middle.id, { segment: middle.id }],
    ] as const) {
      const res = await call("PATCH", `/v1/manage/segments/${id}`, ownerA, { definition });
      expect(res).toMatchObject({ status: 400, body: { ok: false, error: { code: "invalid_request" } } });
      expect(res.body.error.message).toMatch(/cycle/);
    }
    expect((await call("GET", `/v1/manage/segments/${base.id}`, ownerA)).body.segment.version).toBe(1);
    const inUse = await call("POST", `/v1/manage/segments/${base.id}/archive`, ownerA, {});
    expect(inUse).toMatchObject({ status: 409, body: { error: { code: "segment_in_use" } } });
    // a diamond is not a cycle
    const diamond = await call("PATCH", `/v1/manage/segments/${top.id}`, ownerA, {
      definition: { all: [{ segment: middle.id }, { segment: base.id }] },
    });
    expect(diamond.status).toBe(200);
  });

  it("two concurrent edits that would each add half of a cycle: exactly one is accepted", async () => {
    for (let round = 0; round < 5; round++) {
      const x = await create(ownerA, `x${round}`, highValue);
      const y = await create(ownerA, `y${round}`, highValue);
      const results = await Promise.all([
        call("PATCH", `/v1/manage/segments/${x.id}`, ownerA, { definition: { segment: y.id } }),
        call("PATCH", `/v1/manage/segments/${y.id}`, teamA, { definition: { segment: x.id } }),
      ]);
      expect(results.map((r) => r.status).sort()).toEqual([200, 400]);
    }
  });

  it("in the database, the service role sees no definition without a tenant and cannot write another's", async () => {
    const ofB = await create(ownerB, "B rls", highValue);
    const client = await api.pool.connect();
    try {
      expect((await client.query("SELECT count(*)::int AS n FROM segment_definitions")).rows[0].n).toBe(0);
      expect(
        (await client.query("SELECT count(*)::int AS n FROM segment_definition_versions")).rows[0].n,
      ).toBe(0);
      await client.query("BEGIN");
      await client.query("SELECT set_config('app.business_id', $1, true)", [a.businessId]);
      const update = await client.query("UPDATE segment_definitions SET name = 'x' WHERE id = $1", [ofB.id]);
      expect(update.rowCount).toBe(0);
      await expect(
        client.query(
          "INSERT INTO segment_definitions (business_id, name, definition) VALUES ($1, 'x', '{}')",
          [b.businessId],
        ),
      ).rejects.toThrow(/row-level security/);
      await client.query("ROLLBACK");
      await expect(client.query("DELETE FROM segment_definitions")).rejects.toThrow(/permission denied/);
    } finally {
      await client.query("ROLLBACK").catch(() => {});
      client.release();
    }
  });

  it("keeps tenants apart: a member of A can neither read nor write B's definitions (403 or 404), nor name them", async () => {
    const ofB = await create(ownerB, "B's segment", highValue);
    const id = ofB.id;
    for (const token of [ownerA, teamA]) {
      const matrix: Array<[string, string, unknown, number[]]> = [
        ["GET", `/v1/manage/segments/${id}`, undefined, [404]],
        ["GET", `/v1/manage/segments/${id}?business_id=${a.businessId}`, undefined, [404]],
        ["GET", `/v1/manage/segments/${id}?business_id=${b.businessId}`, undefined, [403]],
        ["GET", `/v1/manage/segments/${id}/versions`, undefined, [404]],
        ["GET", `/v1/manage/segments?business_id=${b.businessId}`, undefined, [403]],
        ["PATCH", `/v1/manage/segments/${id}`, { name: "stolen" }, [404]],
        ["PATCH", `/v1/manage/segments/${id}`, { name: "stolen", business_id: b.businessId }, [403]],
        ["PATCH", `/v1/manage/segments/${id}?business_id=${b.businessId}`, { name: "stolen" }, [403]],
        ["POST", `/v1/manage/segments/${id}/archive`, {}, [404]],
        ["POST", `/v1/manage/segments/${id}/archive`, { business_id: b.businessId }, [403]],
        [
          "POST",
          "/v1/manage/segments",
          { business_id: b.businessId, name: "n", definition: highValue },
          [403],
        ],
      ];
      for (const [method, path, body, statuses] of matrix) {
        const res = await call(method, path, token, body);
        expect(statuses, `${method} ${path} ${JSON.stringify(body)}`).toContain(res.status);
        expect(res.body.ok).toBe(false);
        expect(JSON.stringify(res.body)).not.toContain("B's segment");
      }
      const listed = await call("GET", "/v1/manage/segments?status=all", token);
      expect(listed.body.segments.map((s: { id: string }) => s.id)).not.toContain(id);
      const naming = await call("POST", "/v1/manage/segments", token, {
        name: "n",
        definition: { segment: id },
      });
      expect(naming.status).toBe(400);
      expect(JSON.stringify(naming.body.error.issues)).toContain("does not exist in this business");
    }
    const { rows } = await admin.query(
      "SELECT name, version, status FROM segment_definitions WHERE id = $1",
      [id],
    );
    expect(rows).toEqual([{ name: "B's segment", version: 1, status: "active" }]);
    const history = await admin.query(
      "SELECT count(*)::int AS n FROM segment_definition_versions WHERE segment_id = $1",
      [id],
    );
    expect(history.rows[0].n).toBe(1);

    expect((await call("GET", "/v1/manage/segments", keyA)).body.error.code).toBe("user_token_required");
    expect((await call("GET", "/v1/manage/segments", undefined)).status).toBe(401);
    const stranger = await signUserToken(env.jwtSecret, randomUUID());
    expect((await call("GET", "/v1/manage/segments", stranger)).status).toBe(403);
  });

  it("refuses what cannot be stored (NUL, control characters, lone surrogates) with 400 naming the field", async () => {
    for (const bad of ["a\u0000b", "a\u001bb", "\ud800"]) {
      const byName = await call("POST", "/v1/manage/segments", ownerA, { name: bad, definition: highValue });
      expect(byName).toMatchObject({ status: 400, body: { error: { code: "invalid_request" } } });
      const byRule = await call("POST", "/v1/manage/segments", ownerA, {
        name: "n",
        definition: { contact: { field: "traits.x", op: "=", value: bad } },
      });
      expect(byRule.status).toBe(400);
      expect(byRule.body.error.issues[0].path.slice(0, 2)).toEqual(["definition", "contact"]);
    }
  });

  it("answers arbitrary JSON, Unicode and paths with 2xx or 4xx in the SPEC 4 shape, never 5xx", async () => {
    const anyBody = fc.oneof(
      fc.jsonValue(),
      fc.string({ unit: "binary" }),
      fc.record({ name: fc.string({ unit: "binary" }), definition: fc.jsonValue() }),
      fc.record({
        name: fc.string({ unit: "binary", minLength: 1 }),
        definition: fc.record({
          contact: fc.record({
            field: fc.string({ unit: "binary" }),
            op: fc.constantFrom("=", "in", "before", "exists"),
            value: fc.jsonValue(),
          }),
        }),
      }),
    );
    const anyPath = fc.oneof(
      fc.constant("/v1/manage/segments"),
      fc
        .string({ unit: "grapheme", maxLength: 40 })
        .map((s) => `/v1/manage/segments/${encodeURIComponent(s)}`),
      fc.uuid().map((id) => `/v1/manage/segments/${id}/archive`),
      fc
        .string({ unit: "binary", maxLength: 40 })
        .map(
          (s) => `/v1/manage/segments?business_id=${encodeURIComponent(s)}&status=${encodeURIComponent(s)}`,
        ),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PATCH"),
        anyPath,
        anyBody,
        async (method, path, body) => {
          const res = await call(method, path, teamA, method === "GET" ? undefined : body);
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

  it("the operator CLI (admin role, which RLS does not restrict) applies the same checks, scoped to the business named", async () => {
    const printed: string[] = [];
    const print = (line: string) => printed.push(line);
    const ofB = await create(ownerB, "B only", highValue);
    expect(await runSegments(["create", a.businessId, "cli", JSON.stringify(highValue)], admin, print)).toBe(
      0,
    );
    const made = JSON.parse(printed.pop()!);
    expect(made).toMatchObject({ business_id: a.businessId, version: 1, member_count: 0 });
    const naming = ["update", a.businessId, made.id, "--definition", JSON.stringify({ segment: ofB.id })];
    expect(await runSegments(naming, admin, print)).toBe(1);
    expect(printed.pop()).toMatch(/does not exist in this business/);
    expect(await runSegments(["get", a.businessId, ofB.id], admin, print)).toBe(1);
    expect(printed.pop()).toMatch(/not_found/);
    expect(
      await runSegments(
        ["update", a.businessId, made.id, "--definition", JSON.stringify({ segment: made.id })],
        admin,
        print,
      ),
    ).toBe(1);
    expect(printed.pop()).toMatch(/cycle/);
    expect(
      await runSegments(
        ["update", a.businessId, made.id, "--name", "cli 2", "--expected-version", "1"],
        admin,
        print,
      ),
    ).toBe(0);
    expect(await runSegments(["archive", a.businessId, made.id], admin, print)).toBe(0);
    expect(await runSegments(["get", a.businessId, made.id, "--versions"], admin, print)).toBe(0);
    expect(printed.slice(-3).map((line) => JSON.parse(line).version)).toEqual([1, 2, 3]);
    const api = await call("GET", `/v1/manage/segments/${made.id}`, teamA);
    expect(api.body.segment).toMatchObject({ name: "cli 2", version: 3, status: "archived" });
    expect(await runSegments(["frobnicate"], admin, print)).toBe(2);
  });

  it("describes the management API in /openapi.json with the rule's JSON Schema", async () => {
    const doc = (await call("GET", "/openapi.json", undefined)).body;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(["/v1/manage/segments", "/v1/manage/segments/{id}"]),
    );
    expect(doc.components.schemas.SegmentDefinition.definitions.eventCondition).toBeDefined();
    expect(JSON.stringify(doc)).not.toContain('"#/definitions/');
  });
});
