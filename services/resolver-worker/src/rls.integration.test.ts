import { spawnSync } from "node:child_process";
import { repoRoot, stackEnv } from "@crm/config";
import { createPool, transaction } from "@crm/db";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveContact } from "./resolve-contact.ts";
import { rawEvent } from "./test-harness.ts";

// Tenant isolation in the database (SPEC 6, 9.4), seen from the worker's own role.
describe("row level security for the service role", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const service = createPool({ connectionString: env.databaseUrl, applicationName: "rls-test", max: 2 });
  let a: { businessId: string };
  let b: { businessId: string };
  let contactB: string;

  beforeAll(async () => {
    a = await createBusiness(admin);
    b = await createBusiness(admin);
    await resolveContact(service, rawEvent(a.businessId, { email: "a@example.com" }));
    contactB = (
      await resolveContact(service, rawEvent(b.businessId, { external_id: "acct_b", email: "b@example.com" }))
    ).contactId;
    // an identity conflict row for B too
    await resolveContact(service, rawEvent(b.businessId, { external_id: "acct_c", email: "b@example.com" }));
  });

  afterAll(async () => {
    await Promise.all([admin.end(), service.end()]);
  });

  const TABLES = [
    "crm_contacts",
    "contact_identities",
    "crm_events",
    "outbox",
    "identity_conflicts",
    "businesses",
  ];

  const asTenant = <T>(businessId: string | undefined, fn: (client: pg.PoolClient) => Promise<T>) =>
    transaction(service, "rls_test", fn, businessId ? { businessId } : {});

  it("with no tenant set, sees no rows at all (fail closed)", async () => {
    for (const table of TABLES) {
      const { rows } = await service.query(`SELECT count(*)::int AS n FROM ${table}`);
      expect({ table, n: rows[0].n }).toEqual({ table, n: 0 });
    }
    // and the admin sees B's rows, so the zero above is RLS, not an empty table
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM identity_conflicts WHERE business_id = $1",
      [b.businessId],
    );
    expect(rows[0].n).toBeGreaterThan(0);
  });

  it("with tenant A, cannot read, update or insert B's rows", async () => {
    await asTenant(a.businessId, async (client) => {
      for (const table of TABLES) {
        const column = table === "businesses" ? "id" : "business_id";
        const { rows } = await client.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${column} = $1`, [
          b.businessId,
        ]);
        expect({ table, n: rows[0].n }).toEqual({ table, n: 0 });
      }
      const own = await client.query("SELECT count(*)::int AS n FROM crm_contacts");
      expect(own.rows[0].n).toBe(1);
      const update = await client.query("UPDATE crm_contacts SET name = 'owned' WHERE id = $1", [contactB]);
      expect(update.rowCount).toBe(0);
      const updateIdentities = await client.query(
        "UPDATE contact_identities SET contact_id = contact_id WHERE business_id = $1",
        [b.businessId],
      );
      expect(updateIdentities.rowCount).toBe(0);
    });
    const insert = (sql: string, params: unknown[]) =>
      asTenant(a.businessId, (client) => client.query(sql, params)).then(
        () => "inserted",
        (error: { code?: string }) => error.code,
      );
    const now = new Date();
    expect(
      await insert(
        "INSERT INTO crm_contacts (business_id, first_seen_at, last_seen_at) VALUES ($1, $2, $2)",
        [b.businessId, now],
      ),
    ).toBe("42501");
    expect(
      await insert(
        "INSERT INTO contact_identities (business_id, type, value, contact_id) VALUES ($1, 'email', 'x@example.com', $2)",
        [b.businessId, contactB],
      ),
    ).toBe("42501");
    expect(
      await insert(
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id) VALUES ('contact', $2, 'contact.updated', '{}', $1)",
        [b.businessId, contactB],
      ),
    ).toBe("42501");
    // the resolver refuses an event of B in a transaction of A
    const crossTenant = await asTenant(a.businessId, (client) =>
      client.query("SELECT * FROM app.resolve_contact($1, 'evil@example.com', NULL, NULL, NULL)", [
        b.businessId,
      ]),
    ).then(
      () => "resolved",
      (error: { code?: string }) => error.code,
    );
    expect(crossTenant).toBe("42501");
    const { rows } = await admin.query("SELECT name FROM crm_contacts WHERE id = $1", [contactB]);
    expect(rows[0].name).toBeNull();
  });

  it("the tenant does not outlive its transaction on a pooled connection", async () => {
    const client = await service.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT set_config('app.business_id', $1, true)", [a.businessId]);
      expect((await client.query("SELECT count(*)::int AS n FROM crm_contacts")).rows[0].n).toBe(1);
      await client.query("COMMIT");
      expect((await client.query("SELECT count(*)::int AS n FROM crm_contacts")).rows[0].n).toBe(0);
    } finally {
      client.release();
    }
  });

  it("the worker refuses to start with a role that can bypass RLS", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "services/resolver-worker/src/main.ts"], {
      cwd: repoRoot(),
      env: { ...process.env, ...stackEnv(), DATABASE_URL: env.adminUrl, WORKER_PORT: "0" },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(
      /refusing to start: role postgres can bypass row level security/,
    );
  });
});
