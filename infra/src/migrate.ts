import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseEnv } from "@crm/config";
import pg from "pg";
import { z } from "zod";
import { scramVerifier } from "./stack/scram.ts";

const Env = z.object({
  // superuser: owns the schema, creates roles
  DATABASE_ADMIN_URL: z.string().url(),
  // the services' role: its user and password are created here (no SUPERUSER, no BYPASSRLS, owns nothing)
  DATABASE_URL: z.string().url(),
  // Debezium's replication role
  DEBEZIUM_DATABASE_URL: z.string().url(),
  // the ops console's role (created NOLOGIN by migration 055 when unset here, so its grants always apply)
  CONSOLE_DATABASE_URL: z.string().url().optional(),
});

/** Where the SQL lives (tests pass copies). */
export interface SqlLayout {
  /** Versioned migrations: schema changes only, applied once each in name order, never edited once applied. */
  migrations: string;
  /** The migrations of databases created before the baseline (frozen; read only for such a database). */
  archive: string;
  /** The versioned file whose schema a database migrated by the whole archive already has. */
  baseline: string;
  /** Repeatable files: every function and policy, one definition each, applied in name order when changed. */
  repeatable: string;
}

export const SQL_LAYOUT: SqlLayout = {
  migrations: fileURLToPath(new URL("../migrations", import.meta.url)),
  archive: fileURLToPath(new URL("../migrations/archive", import.meta.url)),
  baseline: "035_baseline.sql",
  repeatable: fileURLToPath(new URL("../sql", import.meta.url)),
};

const ROLES = {
  service: "crm_service",
  debezium: "crm_debezium",
  console: "crm_console",
} as const;

/** One runner at a time per database (npm start and a test run may race). */
const RUNNER_LOCK = 727274;
/** A run that waits this long for a table lock (a busy table, a deadlock with the services) starts over. */
const LOCK_TIMEOUT = "5s";
const ATTEMPTS = 5;

function credentials(url: string): { user: string; password: string } {
  const parsed = new URL(url);
  return { user: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
}

async function ensureRole(
  client: pg.Client,
  role: string,
  password: string,
  attributes: string,
): Promise<void> {
  const exists = await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]);
  const verb = exists.rowCount === 0 ? "CREATE" : "ALTER";
  // Role names are our constants; CREATE ROLE takes no parameters, so the statement carries a SCRAM verifier
  // computed here: the password itself never reaches a statement log or pg_stat_activity.
  await client.query(
    `${verb} ROLE ${role} WITH LOGIN ${attributes} PASSWORD ${client.escapeLiteral(scramVerifier(password))}`,
  );
}

const sqlFiles = (dir: string): string[] =>
  existsSync(dir)
    ? readdirSync(dir)
        .filter((file) => /^\d+_.+\.sql$/.test(file))
        .sort()
    : [];

const checksum = (sql: string): string => createHash("sha256").update(sql).digest("hex");

async function checksums(client: pg.Client, query: string): Promise<Map<string, string>> {
  const rows = await client.query<{ name: string; checksum: string }>(query);
  return new Map(rows.rows.map((row) => [row.name, row.checksum]));
}

async function run(client: pg.Client, what: string, sql: string): Promise<void> {
  try {
    await client.query(sql);
  } catch (error) {
    throw new Error(`${what} failed: ${(error as Error).message}`, { cause: error });
  }
}

/** Applies a versioned file unless applied already; throws if an applied file was edited. True when it ran. */
async function applyVersioned(
  client: pg.Client,
  done: Map<string, string>,
  dir: string,
  file: string,
): Promise<boolean> {
  const sql = readFileSync(join(dir, file), "utf8");
  const sum = checksum(sql);
  const previous = done.get(file);
  if (previous === sum) return false;
  if (previous !== undefined) {
    throw new Error(`migration ${file} changed after it was applied; add a new migration instead`);
  }
  await run(client, `migration ${file}`, sql);
  await client.query("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", [file, sum]);
  done.set(file, sum);
  return true;
}

/** One run, inside the caller's transaction. Returns what it did, to be reported once committed. */
async function migrateOnce(client: pg.Client, layout: SqlLayout): Promise<string[]> {
  const steps: string[] = [];
  const done = await checksums(client, "SELECT version AS name, checksum FROM schema_migrations");
  let schemaChanged = false;

  const archived = sqlFiles(layout.archive);
  if (!done.has(layout.baseline) && archived.some((file) => done.has(file))) {
    // Created before the baseline existed: finish its archived history (nothing to do for a database at 035), and
    // record that it has the baseline's schema instead of running the baseline.
    for (const file of archived) {
      if (await applyVersioned(client, done, layout.archive, file)) {
        steps.push(`applied archived ${file}`);
        schemaChanged = true;
      }
    }
    const sum = checksum(readFileSync(join(layout.migrations, layout.baseline), "utf8"));
    await client.query("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", [
      layout.baseline,
      sum,
    ]);
    done.set(layout.baseline, sum);
    steps.push(`recorded ${layout.baseline} without running it: this database has its schema (archive/)`);
  }

  for (const file of sqlFiles(layout.migrations)) {
    if (await applyVersioned(client, done, layout.migrations, file)) {
      steps.push(`applied ${file}`);
      schemaChanged = true;
    }
  }

  // Functions and policies. All of them again after a schema change: a policy goes with a dropped table, and a
  // definition may have been written against the new schema. A file runs again, too, once any file before it ran:
  // a later one may act on what an earlier one defines (90_ownership.sql hands every definer function to its owner).
  const repeatableDone = await checksums(client, "SELECT name, checksum FROM schema_repeatables");
  const repeatables = sqlFiles(layout.repeatable);
  let earlierRan = false;
  for (const file of repeatables) {
    const sql = readFileSync(join(layout.repeatable, file), "utf8");
    const sum = checksum(sql);
    if (!schemaChanged && !earlierRan && repeatableDone.get(file) === sum) continue;
    earlierRan = true;
    await run(client, `sql/${file}`, sql);
    await client.query(
      `INSERT INTO schema_repeatables (name, checksum) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()`,
      [file, sum],
    );
    steps.push(`applied sql/${file}`);
  }
  for (const file of repeatableDone.keys()) {
    if (repeatables.includes(file)) continue;
    await client.query("DELETE FROM schema_repeatables WHERE name = $1", [file]);
    steps.push(`forgot sql/${file}: the file is gone (what it defined stays until a migration drops it)`);
  }
  return steps;
}

/** A lock wait that gave up or a deadlock: the run rolled back whole and can start over. */
function lockConflict(error: unknown): boolean {
  const code = ((error as { cause?: { code?: string } }).cause ?? (error as { code?: string }))?.code;
  return code === "55P03" || code === "40P01";
}

/**
 * Brings the database to the tree's schema: the versioned migrations not applied yet (the baseline, for a new
 * database), then every repeatable file whose checksum changed. All of it in ONE transaction, so the functions never
 * run against a schema they were not written for and a failed run changes nothing. Safe to run again and
 * concurrently. Returns what was applied.
 */
export async function migrate(
  env = parseEnv(Env),
  log: (line: string) => void = console.log,
  layout: SqlLayout = SQL_LAYOUT,
): Promise<string[]> {
  const service = credentials(env.DATABASE_URL);
  const debezium = credentials(env.DEBEZIUM_DATABASE_URL);
  if (service.user !== ROLES.service || debezium.user !== ROLES.debezium) {
    throw new Error(
      `DATABASE_URL must use role ${ROLES.service} and DEBEZIUM_DATABASE_URL role ${ROLES.debezium}`,
    );
  }
  const client = new pg.Client({ connectionString: env.DATABASE_ADMIN_URL, application_name: "migrate" });
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [RUNNER_LOCK]);
    await ensureRole(
      client,
      ROLES.service,
      service.password,
      "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
    );
    await ensureRole(client, ROLES.debezium, debezium.password, "REPLICATION NOSUPERUSER NOBYPASSRLS");
    if (env.CONSOLE_DATABASE_URL) {
      const opsConsole = credentials(env.CONSOLE_DATABASE_URL);
      if (opsConsole.user !== ROLES.console)
        throw new Error(`CONSOLE_DATABASE_URL must use role ${ROLES.console}`);
      const attributes = "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE";
      await ensureRole(client, ROLES.console, opsConsole.password, attributes);
    }
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_repeatables (
      name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    for (let attempt = 1; ; attempt++) {
      await client.query("BEGIN");
      try {
        await client.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
        const steps = await migrateOnce(client, layout);
        await client.query("COMMIT");
        for (const step of steps) log(`[migrate] ${step}`);
        if (steps.length === 0) log("[migrate] schema up to date");
        return steps;
      } catch (error) {
        await client.query("ROLLBACK");
        if (attempt === ATTEMPTS || !lockConflict(error)) throw error;
        log(`[migrate] ${(error as Error).message}; nothing applied, trying again (${attempt}/${ATTEMPTS})`);
        await sleep(attempt * 1_000);
      }
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [RUNNER_LOCK]).catch(() => {});
    await client.end();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  migrate().then(
    () => process.exit(0),
    (error) => {
      console.error(`[migrate] ${(error as Error).message}`);
      process.exit(1);
    },
  );
}
