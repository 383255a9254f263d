import { testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import {
  createPool,
  isConnectionFailure,
  isTransientDbError,
  sqlLiteral,
  transaction,
  transactionOfOne,
} from "./index.ts";

// Postgres crashing under a transaction (the fault harness's `pg_ctl stop -m immediate`) must fail that
// transaction, not the process: pg reports a lost connection as an 'error' event on the checked-out client too.
describe("transaction failures: a connection that dies, a statement the server refuses", () => {
  const env = testEnv();
  const pool = createPool({ connectionString: env.adminUrl, applicationName: "db-kill-test", max: 2 });
  const killer = new pg.Pool({ connectionString: env.adminUrl, max: 1 });

  afterAll(async () => {
    await Promise.all([pool.end(), killer.end()]);
  });

  it("rejects the transaction, keeps the process alive, and the pool serves the next one", async () => {
    const killed = transaction(pool, "killed", async (client) => {
      const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
      await killer.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
      // The server's goodbye arrives while no query runs: only the client's 'error' event sees it.
      await new Promise((resolve) => setTimeout(resolve, 500));
      await client.query("SELECT 1");
    });
    const error = await killed.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(Error);
    expect(isConnectionFailure(error), String(error)).toBe(true);
    const { rows } = await pool.query<{ one: number }>("SELECT 1 AS one");
    expect(rows[0]!.one).toBe(1);
  });

  it("a NUL byte is the live server's answer (08P01), not a lost connection: the pool goes on", async () => {
    const refused = await transactionOfOne(pool, "nul", `SELECT ${sqlLiteral("M\u0000")}`).catch(
      (caught: unknown) => caught,
    );
    expect(refused).toMatchObject({ code: "08P01" });
    expect(isConnectionFailure(refused)).toBe(false);
    expect(isTransientDbError(refused)).toBe(false);
    const { rows } = await pool.query<{ one: number }>("SELECT 1 AS one");
    expect(rows[0]!.one).toBe(1);
  });
});

describe("transaction with snapshot: every statement reads one snapshot", () => {
  const env = testEnv();
  const pool = createPool({ connectionString: env.adminUrl, applicationName: "db-snapshot-test", max: 2 });

  afterAll(async () => {
    await pool.end();
  });

  it("does not see a commit that lands between two reads, and refuses writes", async () => {
    const table = `snapshot_test_${process.pid}`;
    await pool.query(`CREATE TABLE ${table} (n int)`);
    try {
      const read = (snapshot: boolean) =>
        transaction(
          pool,
          "snapshot",
          async (client) => {
            const count = async () =>
              Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);
            const before = await count();
            await pool.query(`INSERT INTO ${table} VALUES (1)`);
            return [before, await count()];
          },
          { snapshot },
        );
      expect(await read(true)).toEqual([0, 0]);
      expect(await read(false)).toEqual([1, 2]);
      const write = await transaction(pool, "snapshot", (client) => client.query(`DELETE FROM ${table}`), {
        snapshot: true,
      }).catch((caught: unknown) => caught);
      expect(write).toMatchObject({ code: "25006" });
    } finally {
      await pool.query(`DROP TABLE ${table}`);
    }
  });
});
