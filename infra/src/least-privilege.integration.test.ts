import { testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";

// Guarantee 9.7 in Postgres (issue 14.3): the services' role does its job and nothing more.
describe("least privilege in Postgres", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const service = new pg.Pool({ connectionString: env.databaseUrl, max: 2 });

  afterAll(async () => {
    await Promise.all([admin.end(), service.end()]);
  });

  /** The SQLSTATE a statement as the services' role fails with, or "ok". */
  async function asService(sql: string, params: unknown[] = []): Promise<string> {
    try {
      await service.query(sql, params);
      return "ok";
    } catch (error) {
      return (error as { code?: string }).code ?? (error as Error).message;
    }
  }

  it("the services' role cannot create a replication slot or open a replication connection", async () => {
    // 42501: insufficient privilege (REPLICATION is the Debezium role's alone).
    expect(
      await asService(
        "SELECT pg_create_logical_replication_slot('least_privilege_test', 'test_decoding', true)",
      ),
    ).toBe("42501");
    const walsender = new pg.Client({ connectionString: env.databaseUrl, replication: "database" } as never);
    await expect(walsender.connect()).rejects.toThrow(/replication|permission/i);
    await walsender.end().catch(() => {});
  });

  it("the services' role cannot DELETE or TRUNCATE the outbox (pruning runs as an operator)", async () => {
    expect(await asService("DELETE FROM outbox WHERE false")).toBe("42501");
    expect(await asService("TRUNCATE outbox")).toBe("42501");
  });

  it("the services' role cannot read another tenant's rows, nor any row without a tenant", async () => {
    const [a, b] = [crypto.randomUUID(), crypto.randomUUID()];
    const member = crypto.randomUUID();
    for (const id of [a, b]) {
      await admin.query(
        "INSERT INTO businesses (id, name, owner_id, plan, default_country) VALUES ($1, 'lp test', $2, 'standard', 'US')",
        [id, crypto.randomUUID()],
      );
      await admin.query("INSERT INTO business_team (business_id, user_id) VALUES ($1, $2)", [id, member]);
    }
    const client = await service.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT set_config('app.business_id', $1, true)", [a]);
      const seen = await client.query<{ business_id: string }>(
        "SELECT business_id FROM business_team WHERE user_id = $1",
        [member],
      );
      expect(seen.rows.map((row) => row.business_id)).toEqual([a]);
      const other = await client.query("SELECT 1 FROM businesses WHERE id = $1", [b]);
      expect(other.rowCount).toBe(0);
      await client.query("COMMIT");
      const untenanted = await client.query("SELECT 1 FROM business_team WHERE user_id = $1", [member]);
      expect(untenanted.rowCount).toBe(0);
    } finally {
      client.release();
    }
  });

  it("every SECURITY DEFINER function is owned by a role that is not a superuser and cannot log in", async () => {
    const { rows } = await admin.query<{
      fn: string;
      owner: string;
      rolsuper: boolean;
      rolcanlogin: boolean;
    }>(
      `SELECT p.oid::regprocedure::text AS fn, r.rolname AS owner, r.rolsuper, r.rolcanlogin
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
       WHERE p.prosecdef AND n.nspname IN ('app', 'public')`,
    );
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.filter((row) => row.rolsuper || row.rolcanlogin)).toEqual([]);
    expect(new Set(rows.map((row) => row.owner))).toEqual(new Set(["crm_definer"]));
  });

  it("stores the roles' passwords as SCRAM verifiers (the migration never sends a password itself)", async () => {
    const { rows } = await admin.query<{ rolname: string; rolpassword: string }>(
      "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('crm_service', 'crm_debezium') ORDER BY 1",
    );
    expect(rows.map((row) => row.rolname)).toEqual(["crm_debezium", "crm_service"]);
    for (const row of rows) expect(row.rolpassword).toMatch(/^SCRAM-SHA-256\$4096:/);
  });
});
