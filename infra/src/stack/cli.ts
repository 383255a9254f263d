import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnvFile } from "@crm/config";
import {
  type JvmPart,
  jvmLogFile,
  resolveJars,
  startConnect,
  startKafka,
  startRegistry,
  stopJvm,
} from "./jvm.ts";
import { adminUrl, pgLogFile, startPostgres, stopPostgres, wipePostgres } from "./postgres.ts";
import { ensureToolchain } from "./prereqs.ts";
import { isAlive, portOpen, readPid } from "./proc.ts";
import { type StackSettings, stackSettings } from "./settings.ts";

const PARTS = ["postgres", "kafka", "registry", "connect"] as const;
type Part = (typeof PARTS)[number];

const log = (line: string) => console.log(`[stack] ${line}`);

/** Development-only passwords of the roles the migrations create; overridable through the environment. */
const SERVICE_ROLE = {
  user: "crm_service",
  password: process.env.STACK_SERVICE_PASSWORD ?? "crm_service_dev",
};
const DEBEZIUM_ROLE = {
  user: "crm_debezium",
  password: process.env.STACK_DEBEZIUM_PASSWORD ?? "crm_debezium_dev",
};

/** Secrets generated once per stack and kept across `up`s (a new JWT secret would invalidate issued tokens). */
function stackSecrets(s: StackSettings): { jwtSecret: string; logHashSecret: string } {
  const file = join(s.dir, "secrets.json");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8"));
  const secrets = {
    jwtSecret: randomBytes(32).toString("base64url"),
    logHashSecret: randomBytes(32).toString("base64url"),
  };
  writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  return secrets;
}

/** The `.stack/env` contract of SPEC section 3: every tool, test and service reads these names. */
function writeEnvFile(s: StackSettings): Record<string, string> {
  const secrets = stackSecrets(s);
  const url = (role: { user: string; password: string }) =>
    `postgres://${role.user}:${role.password}@${s.host}:${s.pgPort}/crm`;
  const env: Record<string, string> = {
    DATABASE_URL: url(SERVICE_ROLE),
    DATABASE_ADMIN_URL: adminUrl(s),
    DEBEZIUM_DATABASE_URL: url(DEBEZIUM_ROLE),
    KAFKA_BROKERS: `${s.host}:${s.kafkaPort}`,
    SCHEMA_REGISTRY_URL: `http://${s.host}:${s.registryPort}/apis/ccompat/v7`,
    CONNECT_URL: `http://${s.host}:${s.connectPort}`,
    INGEST_URL: `http://${s.host}:${s.ingestPort}`,
    INGEST_PORT: String(s.ingestPort),
    WORKER_URL: `http://${s.host}:${s.workerPort}`,
    WORKER_PORT: String(s.workerPort),
    KAFKA_PARTITIONS: String(s.partitions),
    JWT_SECRET: secrets.jwtSecret,
    LOG_HASH_SECRET: secrets.logHashSecret,
  };
  const text = Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
  writeFileSync(
    join(s.dir, "env"),
    `# written by npm run stack -- up; read by every tool, test and service\n${text}\n`,
    {
      mode: 0o600,
    },
  );
  return env;
}

async function up(s: StackSettings): Promise<void> {
  const started = Date.now();
  mkdirSync(s.logs, { recursive: true });
  const tools = ensureToolchain(log);
  resolveJars(s, tools, log);
  const step = async (name: string, fn: () => Promise<void>) => {
    const t = Date.now();
    await fn();
    log(`${name} ready (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  };
  await step("postgres", () => startPostgres(s, tools, log));
  await step("kafka", () => startKafka(s, tools));
  // The registry needs only Postgres and Connect only Kafka: start both at once to halve the wait.
  const results = await Promise.allSettled([
    step("apicurio registry", () => startRegistry(s, tools)),
    step("kafka connect", () => startConnect(s, tools)),
  ]);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length > 0) throw new Error(failed.map((r) => (r.reason as Error).message).join("\n"));
  const env = writeEnvFile(s);
  log(`stack up in ${((Date.now() - started) / 1000).toFixed(1)} s; endpoints in ${join(s.dir, "env")}`);
  for (const key of ["DATABASE_ADMIN_URL", "KAFKA_BROKERS", "CONNECT_URL", "SCHEMA_REGISTRY_URL"]) {
    log(`  ${key}=${env[key]}`);
  }
}

async function down(s: StackSettings): Promise<void> {
  for (const part of ["connect", "registry", "kafka"] as JvmPart[]) {
    await stopJvm(s, part);
    log(`${part} stopped`);
  }
  await stopPostgres(s);
  log("postgres stopped");
}

function portOf(s: StackSettings, part: Part): number {
  return { postgres: s.pgPort, kafka: s.kafkaPort, registry: s.registryPort, connect: s.connectPort }[part];
}

async function status(s: StackSettings): Promise<boolean> {
  let allUp = true;
  for (const part of PARTS) {
    const record = readPid(s.pids, part);
    const alive = isAlive(record);
    const open = await portOpen(s.host, portOf(s, part));
    allUp &&= alive && open;
    const state = alive ? (open ? "up" : "starting") : open ? "port taken by another process" : "down";
    console.log(
      `${part.padEnd(9)} ${state.padEnd(12)} pid ${alive ? record.pid : "-"}  ${s.host}:${portOf(s, part)}`,
    );
  }
  return allUp;
}

function logFileOf(s: StackSettings, part: Part): string {
  return part === "postgres" ? pgLogFile(s) : jvmLogFile(s, part);
}

function logs(s: StackSettings, args: string[]): void {
  const follow = args.includes("-f");
  const parts = args.filter((a) => a !== "-f") as Part[];
  const files = (parts.length > 0 ? parts : [...PARTS])
    .map((p) => logFileOf(s, p))
    .filter((f) => existsSync(f));
  if (files.length === 0) {
    log("no logs yet");
    return;
  }
  spawn("tail", ["-n", "60", ...(follow ? ["-F"] : []), ...files], { stdio: "inherit" });
}

async function reset(s: StackSettings): Promise<void> {
  await down(s);
  wipePostgres(s);
  // Jars in .stack/lib are kept: they are a cache of Maven artifacts, not state.
  for (const entry of ["kafka", "connect", "logs", "pids", "env", "secrets.json"]) {
    rmSync(join(s.dir, entry), { recursive: true, force: true });
  }
  log("stack data wiped");
}

async function main(): Promise<void> {
  const [command = "status", ...args] = process.argv.slice(2);
  const s = stackSettings();
  switch (command) {
    case "up":
      await up(s);
      break;
    case "down":
      await down(s);
      break;
    case "status":
      process.exitCode = (await status(s)) ? 0 : 3;
      break;
    case "logs":
      logs(s, args);
      break;
    case "reset":
      await reset(s);
      break;
    case "env":
      console.log(parseEnvFile(readFileSync(join(s.dir, "env"), "utf8")));
      break;
    default:
      console.error("usage: npm run stack -- up|down|status|logs [part] [-f]|reset");
      process.exitCode = 2;
  }
}

main().then(
  () => {
    // `logs -f` keeps its tail child; everything else is done.
    if (process.argv[2] !== "logs") process.exit();
  },
  (error) => {
    console.error(`[stack] ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
