import { spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stackEnv } from "@crm/config";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { migrate, SQL_LAYOUT, type SqlLayout } from "./migrate.ts";

// Every case runs on its own scratch database of the stack's cluster (roles are cluster-wide), never on `crm`.
const env = stackEnv();
const adminUrl = env.DATABASE_ADMIN_URL!;
const scratch: string[] = [];
const tmpDirs: string[] = [];

function databaseUrl(name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>, url = adminUrl): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function createDatabase(): Promise<string> {
  const name = `migrate_test_${randomUUID().slice(0, 8)}`;
  await admin((client) => client.query(`CREATE DATABASE ${name}`));
  scratch.push(name);
  return name;
}

afterAll(async () => {
  await admin(async (client) => {
    for (const name of scratch) await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true });
});

const runMigrate = (name: string, layout: SqlLayout = SQL_LAYOUT) =>
  migrate(
    {
      DATABASE_ADMIN_URL: databaseUrl(name),
      DATABASE_URL: env.DATABASE_URL!,
      DEBEZIUM_DATABASE_URL: env.DEBEZIUM_DATABASE_URL!,
    },
    () => {},
    layout,
  );

/** Migrates the way main's runner did before the baseline: each archived file up to `last`, in its own transaction. */
async function migrateAsMainDid(name: string, last: string): Promise<void> {
  await admin(async (client) => {
    await client.query(`CREATE TABLE schema_migrations (
      version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const files = readdirSync(SQL_LAYOUT.archive)
      .filter((file) => file.endsWith(".sql") && file <= last)
      .sort();
    for (const file of files) {
      const sql = readFileSync(join(SQL_LAYOUT.archive, file), "utf8");
      await client.query("BEGIN");
      await client.query(sql);
      await client.query("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", [
        file,
        createHash("sha256").update(sql).digest("hex"),
      ]);
      await client.query("COMMIT");
    }
  }, databaseUrl(name));
}

/** The newest pg_dump of the Debian layout the stack uses, else the one on PATH. */
function pgDumpBinary(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "pg_dump")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  return versions[0] ? join(root, versions[0], "bin", "pg_dump") : "pg_dump";
}

/** `pg_dump --schema-only`, without the random `\restrict` keys of recent pg_dump releases. */
function schemaDump(name: string): string {
  const dump = spawnSync(pgDumpBinary(), ["--schema-only", "--dbname", databaseUrl(name)], {
    encoding: "utf8",
  });
  if (dump.status !== 0) throw new Error(`pg_dump failed: ${dump.stderr || dump.error?.message}`);
  return dump.stdout
    .split("\n")
    .filter((line) => !/^\\(un)?restrict /.test(line))
    .join("\n");
}

const versions = (name: string) =>
  admin(
    async (client) =>
      (
        await client.query<{ version: string }>("SELECT version FROM schema_migrations ORDER BY version")
      ).rows.map((row) => row.version),
    databaseUrl(name),
  );

/** A copy of the SQL layout whose files a test may edit. */
function layoutCopy(): SqlLayout {
  const dir = mkdtempSync(join(tmpdir(), "migrate-test-"));
  tmpDirs.push(dir);
  cpSync(SQL_LAYOUT.migrations, join(dir, "migrations"), { recursive: true });
  cpSync(SQL_LAYOUT.repeatable, join(dir, "sql"), { recursive: true });
  return {
    migrations: join(dir, "migrations"),
    archive: join(dir, "migrations", "archive"),
    baseline: SQL_LAYOUT.baseline,
    repeatable: join(dir, "sql"),
  };
}

describe("migrate", () => {
  it("a new database and one that main migrated to 035 end with the same schema", async () => {
    const fresh = await createDatabase();
    const existing = await createDatabase();
    await migrateAsMainDid(existing, "035_events_without_business_index.sql");

    expect(await runMigrate(fresh)).toContain(`applied ${SQL_LAYOUT.baseline}`);
    const upgrade = await runMigrate(existing);
    expect(upgrade).toContain(
      `recorded ${SQL_LAYOUT.baseline} without running it: this database has its schema (archive/)`,
    );
    expect(upgrade).not.toContain(`applied ${SQL_LAYOUT.baseline}`);
    expect(upgrade.filter((step) => step.startsWith("applied archived"))).toEqual([]);

    expect(schemaDump(existing)).toBe(schemaDump(fresh));
    expect(await versions(existing)).toContain(SQL_LAYOUT.baseline);
    expect(await runMigrate(fresh)).toEqual([]);
    expect(await runMigrate(existing)).toEqual([]);
  });

  it("a database part way through the archived history finishes it, then has the same schema as a new one", async () => {
    const fresh = await createDatabase();
    const existing = await createDatabase();
    await migrateAsMainDid(existing, "031_resolve_contacts.sql");
    await runMigrate(fresh);
    const upgrade = await runMigrate(existing);
    expect(upgrade.filter((step) => step.startsWith("applied archived"))).toEqual([
      "applied archived 032_crm_events_business_idx.sql",
      "applied archived 033_tenant_index_prefixes.sql",
      "applied archived 034_contacts_by_id_only.sql",
      "applied archived 035_events_without_business_index.sql",
    ]);
    expect(schemaDump(existing)).toBe(schemaDump(fresh));
  });

  it("applies a repeatable file again only when it (or one before it) changed, and refuses an edited versioned migration", async () => {
    const name = await createDatabase();
    const layout = layoutCopy();
    await runMigrate(name, layout);
    const ingest = join(layout.repeatable, "30_ingest_api.sql");
    writeFileSync(ingest, `${readFileSync(ingest, "utf8")}\n-- edited\n`);
    // The files after it run again too (90_ownership.sql hands a new definer function to its owner).
    expect(await runMigrate(name, layout)).toEqual([
      "applied sql/30_ingest_api.sql",
      ...readdirSync(layout.repeatable)
        .filter((file) => /^\d+_.+\.sql$/.test(file) && file > "30_ingest_api.sql")
        .sort()
        .map((file) => `applied sql/${file}`),
    ]);
    expect(await runMigrate(name, layout)).toEqual([]);

    const baseline = join(layout.migrations, layout.baseline);
    writeFileSync(baseline, `${readFileSync(baseline, "utf8")}\n-- edited\n`);
    await expect(runMigrate(name, layout)).rejects.toThrow(/035_baseline.sql changed after it was applied/);
  });

  it("two runners at once on a new database: one migrates, the other finds nothing to do", async () => {
    const name = await createDatabase();
    const [a, b] = await Promise.all([runMigrate(name), runMigrate(name)]);
    expect([a.length > 0, b.length > 0].sort()).toEqual([false, true]);
  });
});
