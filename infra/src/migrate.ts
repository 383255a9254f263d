import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseEnv } from "@crm/config";
import pg from "pg";
import { z } from "zod";

const MIGRATIONS_DIR = fileURLToPath(new URL("../migrations", import.meta.url));

const Env = z.object({
  // superuser: owns the schema, creates roles
  DATABASE_ADMIN_URL: z.string().url(),
  // the services' role: its user and password are created here (no SUPERUSER, no BYPASSRLS, owns nothing)
  DATABASE_URL: z.string().url(),
  // Debezium's replication role
  DEBEZIUM_DATABASE_URL: z.string().url(),
});

const ROLES = {
  service: "crm_service",
  debezium: "crm_debezium",
} as const;

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
  // Role names are our constants; the password is a literal because CREATE ROLE takes no parameters.
  await client.query(
    `${verb} ROLE ${role} WITH LOGIN ${attributes} PASSWORD ${client.escapeLiteral(password)}`,
  );
}

/** Applies every migration not applied yet, each in its own transaction; safe to run again and concurrently. */
export async function migrate(
  env = parseEnv(Env),
  log: (line: string) => void = console.log,
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
  const applied: string[] = [];
  try {
    // One runner at a time (npm start and a test run may race).
    await client.query("SELECT pg_advisory_lock(727274)");
    await ensureRole(
      client,
      ROLES.service,
      service.password,
      "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
    );
    await ensureRole(client, ROLES.debezium, debezium.password, "REPLICATION NOSUPERUSER NOBYPASSRLS");
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Map(
      (
        await client.query<{ version: string; checksum: string }>(
          "SELECT version, checksum FROM schema_migrations",
        )
      ).rows.map((row) => [row.version, row.checksum]),
    );
    const files = readdirSync(MIGRATIONS_DIR)
      .filter((file) => /^\d+_.+\.sql$/.test(file))
      .sort();
    for (const file of files) {
      const sql = readFileSync(join(MIGRATIONS_DIR, file), "utf8");
      const checksum = createHash("sha256").update(sql).digest("hex");
      const previous = done.get(file);
      if (previous === checksum) continue;
      if (previous !== undefined) {
        throw new Error(`migration ${file} changed after it was applied; add a new migration instead`);
      }
      await client.query("BEGIN");
      try {
        await client.query(sql);
        await client.query("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", [
          file,
          checksum,
        ]);
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK");
        throw new Error(`migration ${file} failed: ${(error as Error).message}`);
      }
      applied.push(file);
      log(`[migrate] applied ${file}`);
    }
    if (applied.length === 0) log("[migrate] schema up to date");
  } finally {
    await client.query("SELECT pg_advisory_unlock(727274)").catch(() => {});
    await client.end();
  }
  return applied;
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
