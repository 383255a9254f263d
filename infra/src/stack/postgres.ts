import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import type { Toolchain } from "./prereqs.ts";
import { forgetPid, isAlive, readPid, recordPid, run, stopProcess, waitUntil } from "./proc.ts";
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
    "logging_collector = off",
    "log_min_messages = warning",
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
  if (isRoot()) run("chown", [`${OS_USER}:`, join(data, "postgresql.auto.conf")]);

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

async function createDatabases(s: StackSettings): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(s, "postgres") });
  await client.connect();
  try {
    for (const name of DATABASES) {
      const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
      if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${name}`);
    }
  } finally {
    await client.end();
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
