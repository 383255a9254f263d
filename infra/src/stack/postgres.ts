import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import type { Toolchain } from "./prereqs.ts";
import { forgetPid, isAlive, readPid, recordPid, run, stopProcess, waitUntil } from "./proc.ts";
import { scramVerifier } from "./scram.ts";
import { ROLES, stackSecrets } from "./secrets.ts";
import type { StackSettings } from "./settings.ts";

/** The superuser of the stack's own cluster; its password is local-only (loopback, throwaway data). */
export const PG_ADMIN = { user: "postgres", password: "postgres" };
export const DATABASES = ["crm", "registry"] as const;

const isRoot = () => process.getuid?.() === 0;
// PostgreSQL refuses to run as root, so as root the cluster runs as the unprivileged `postgres` user.
const OS_USER = "postgres";

function asPgUser(command: string, args: string[]): [string, string[]] {
  return isRoot() ? ["runuser", ["-u", OS_USER, "--", command, ...args]] : [command, args];
}

function pgUserCanEnter(dir: string): boolean {
  if (!isRoot()) return true;
  return spawnSync("runuser", ["-u", OS_USER, "--", "test", "-x", dir], { stdio: "ignore" }).status === 0;
}

/**
 * Where the cluster lives: `.stack/pg`, unless the checkout sits under a folder the `postgres` user cannot enter
 * (a root-only home, as in some CI clones); then a folder under /var/lib named after the stack dir.
 */
export function pgHome(s: StackSettings): string {
  const inStack = join(s.dir, "pg");
  mkdirSync(inStack, { recursive: true });
  if (pgUserCanEnter(inStack)) return inStack;
  const hash = createHash("sha1").update(s.dir).digest("hex").slice(0, 10);
  return join("/var/lib/crm-stack", hash, "pg");
}

export function pgLogFile(s: StackSettings): string {
  return join(pgHome(s), "postgres.log");
}

function ensureOsUser(): void {
  if (!isRoot()) return;
  if (spawnSync("id", ["-u", OS_USER], { stdio: "ignore" }).status !== 0) {
    run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER]);
  }
}

function configLines(s: StackSettings, runDir: string): string {
  return [
    "# written by the crm stack launcher",
    `listen_addresses = '${s.host}'`,
    `port = ${s.pgPort}`,
    `unix_socket_directories = '${runDir}'`,
    "wal_level = logical",
    "max_wal_senders = 10",
    "max_replication_slots = 10",
    // A stalled Debezium slot must not fill the disk: past this, Postgres invalidates the slot instead.
    `max_slot_wal_keep_size = '${process.env.STACK_PG_MAX_SLOT_WAL_KEEP ?? "4GB"}'`,
    "max_connections = 200",
    `shared_buffers = '${process.env.STACK_PG_SHARED_BUFFERS ?? "256MB"}'`,
    // At 1,000 events/s with segments the pipeline writes ~7 MB of WAL a second: with the default 1GB a checkpoint
    // started every 2-3 minutes on WAL volume, and after each one every page's first change is written whole to
    // the WAL again. Checkpoints on time (checkpoint_timeout, 5 min) instead, and those page images compressed.
    `max_wal_size = '${process.env.STACK_PG_MAX_WAL_SIZE ?? "4GB"}'`,
    "wal_compression = lz4",
    "logging_collector = off",
    "log_min_messages = warning",
    "",
  ].join("\n");
}

/** The Debezium role: the only one that may open a replication connection (it reads every tenant: README). */
const REPLICATION_ROLE = "crm_debezium";

/**
 * Who may connect how: over TCP only with a SCRAM password; physical replication only as the Debezium role
 * (logical replication connections name a database and are governed by the REPLICATION attribute, which only that
 * role has); the Unix socket, in a directory only the cluster's user can enter, stays trusted for the launcher.
 */
function hbaLines(s: StackSettings): string {
  return [
    "# written by the crm stack launcher",
    "local   all          all                                trust",
    `host    replication  ${REPLICATION_ROLE}  ${s.host}/32   scram-sha-256`,
    `host    all          all                ${s.host}/32   scram-sha-256`,
    "",
  ].join("\n");
}

/** Initializes (once), starts (unless running) and bootstraps the cluster; returns when it accepts connections. */
export async function startPostgres(
  s: StackSettings,
  tools: Toolchain,
  log: (line: string) => void,
): Promise<void> {
  ensureOsUser();
  const home = pgHome(s);
  const data = join(home, "data");
  const runDir = join(home, "run");
  mkdirSync(runDir, { recursive: true });
  if (isRoot()) run("chown", ["-R", `${OS_USER}:`, home]);

  if (!existsSync(join(data, "PG_VERSION"))) {
    log(`postgres: initdb ${data}`);
    const pwfile = join(home, ".pwfile");
    writeFileSync(pwfile, `${PG_ADMIN.password}\n`, { mode: 0o600 });
    if (isRoot()) run("chown", [`${OS_USER}:`, pwfile]);
    const [cmd, args] = asPgUser(join(tools.pgBin, "initdb"), [
      "-D",
      data,
      "-U",
      PG_ADMIN.user,
      "--pwfile",
      pwfile,
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      "--encoding=UTF8",
      "--locale=C",
    ]);
    run(cmd, args);
    rmSync(pwfile, { force: true });
  }
  // Rewritten on every start so changed ports or settings apply; the last value of a setting wins.
  writeFileSync(join(data, "postgresql.auto.conf"), configLines(s, runDir));
  writeFileSync(join(data, "pg_hba.conf"), hbaLines(s), { mode: 0o600 });
  if (isRoot()) run("chown", [`${OS_USER}:`, join(data, "postgresql.auto.conf"), join(data, "pg_hba.conf")]);

  if (!isAlive(readPid(s.pids, "postgres"))) {
    const [cmd, args] = asPgUser(join(tools.pgBin, "pg_ctl"), [
      "-D",
      data,
      "-l",
      pgLogFile(s),
      "-w",
      "-t",
      "60",
      "start",
    ]);
    try {
      run(cmd, args);
    } catch (error) {
      const tail = existsSync(pgLogFile(s))
        ? readFileSync(pgLogFile(s), "utf8").split("\n").slice(-15).join("\n")
        : "";
      throw new Error(`postgres did not start: ${(error as Error).message}\n${tail}`);
    }
    const pid = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
    recordPid(s.pids, "postgres", pid);
  }
  await waitUntil("postgres", () => pgReady(s), { timeoutMs: s.readyTimeoutMs, logFile: pgLogFile(s) });
  // A cluster that was already running reads the rewritten pg_hba.conf now.
  await adminQuery(s, "SELECT pg_reload_conf()");
  await createDatabases(s);
}

export function adminUrl(s: StackSettings, database = "crm"): string {
  return `postgres://${PG_ADMIN.user}:${PG_ADMIN.password}@${s.host}:${s.pgPort}/${database}`;
}

async function pgReady(s: StackSettings): Promise<boolean> {
  const client = new pg.Client({ connectionString: adminUrl(s, "postgres"), connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function adminQuery(s: StackSettings, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(s, "postgres") });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * The databases, and Apicurio's own role owning its own: the registry never connects as the superuser and cannot
 * reach `crm`. A registry database made before the role existed is handed over with everything in it.
 */
async function createDatabases(s: StackSettings): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(s, "postgres") });
  await client.connect();
  try {
    const role = await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [ROLES.registry]);
    const verifier = client.escapeLiteral(scramVerifier(stackSecrets(s).registryPassword));
    await client.query(
      `${role.rowCount === 0 ? "CREATE" : "ALTER"} ROLE ${ROLES.registry} WITH LOGIN NOSUPERUSER NOBYPASSRLS ` +
        `NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD ${verifier}`,
    );
    for (const name of DATABASES) {
      const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
      if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${name}`);
    }
    await client.query(`ALTER DATABASE registry OWNER TO ${ROLES.registry}`);
    await client.query(`REVOKE ALL ON DATABASE registry FROM PUBLIC`);
    await client.query(`REVOKE CONNECT ON DATABASE crm FROM ${ROLES.registry}`);
  } finally {
    await client.end();
  }
  const registry = new pg.Client({ connectionString: adminUrl(s, "registry") });
  await registry.connect();
  try {
    await registry.query(`DO $$
      DECLARE r record;
      BEGIN
        FOR r IN
          SELECT c.oid::regclass AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
            AND pg_get_userbyid(c.relowner) <> '${ROLES.registry}'
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
        LOOP
          EXECUTE format('ALTER TABLE %s OWNER TO ${ROLES.registry}', r.name);
        END LOOP;
      END $$`);
  } finally {
    await registry.end();
  }
}

/**
 * "fast" (SIGINT): active transactions roll back, the cluster stops cleanly. "immediate" (SIGQUIT, exactly what
 * `pg_ctl stop -m immediate` sends): every process exits at once without a checkpoint, as in a crash; the next
 * start runs crash recovery from the WAL.
 */
export async function stopPostgres(s: StackSettings, mode: "fast" | "immediate" = "fast"): Promise<void> {
  const record = readPid(s.pids, "postgres");
  if (record) await stopProcess(record, mode === "fast" ? "SIGINT" : "SIGQUIT", 30_000);
  forgetPid(s.pids, "postgres");
}

export function wipePostgres(s: StackSettings): void {
  rmSync(pgHome(s), { recursive: true, force: true });
}
