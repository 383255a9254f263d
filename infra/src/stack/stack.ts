import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  type JvmPart,
  kafkaBrokerPort,
  kafkaBrokers,
  kafkaNodeIds,
  kafkaPartName,
  resolveJars,
  startConnect,
  startKafka,
  startRegistry,
  stopJvm,
} from "./jvm.ts";
import { adminUrl, startPostgres, stopPostgres } from "./postgres.ts";
import { ensureToolchain } from "./prereqs.ts";
import { isAlive, portOpen, readPid } from "./proc.ts";
import { minInsyncReplicas, replicationFactor, type StackSettings } from "./settings.ts";

/** Every process of the stack by its part name: "postgres", each Kafka node, "registry", "connect". */
export type Part = "postgres" | JvmPart;

export function stackParts(s: StackSettings): Part[] {
  return ["postgres", ...kafkaNodeIds(s).map((id) => kafkaPartName(s, id)), "registry", "connect"];
}

const defaultLog = (line: string) => console.log(`[stack] ${line}`);

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
    KAFKA_BROKERS: kafkaBrokers(s).join(","),
    KAFKA_REPLICATION_FACTOR: String(replicationFactor(s)),
    KAFKA_MIN_INSYNC_REPLICAS: String(minInsyncReplicas(s)),
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

/** A stack dir keeps the Kafka node count it was created with; switching needs `reset` or another STACK_DIR. */
function assertSameShape(s: StackSettings): void {
  const file = join(s.dir, "kafka-nodes");
  // Dirs made before the count was recorded: a single node's data lives in kafka/, a cluster's in kafka-N/.
  const inferred = existsSync(join(s.dir, "kafka", "data"))
    ? 1
    : readdirSync(s.dir).filter((entry) => /^kafka-\d+$/.test(entry)).length;
  const created = existsSync(file) ? Number(readFileSync(file, "utf8")) : inferred;
  if (created === 0) {
    writeFileSync(file, String(s.kafkaNodes));
    return;
  }
  if (created !== s.kafkaNodes) {
    throw new Error(
      `${s.dir} holds a stack with ${created} Kafka node(s), not ${s.kafkaNodes}: use another STACK_DIR for ` +
        "cluster mode, or `npm run stack -- reset` to wipe this one",
    );
  }
}

/** `npm run stack -- up`: starts whatever part is not running, in order, and writes `<dir>/env`. */
export async function stackUp(s: StackSettings, log = defaultLog): Promise<Record<string, string>> {
  const started = Date.now();
  mkdirSync(s.logs, { recursive: true });
  assertSameShape(s);
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
  return env;
}

/** `npm run stack -- down`: stops exactly the recorded processes (Kafka nodes together, so no node waits for a quorum). */
export async function stackDown(s: StackSettings, log = defaultLog): Promise<void> {
  for (const part of ["connect", "registry"] as JvmPart[]) {
    await stopJvm(s, part);
    log(`${part} stopped`);
  }
  const nodes = kafkaNodeIds(s).map((id) => kafkaPartName(s, id));
  await Promise.all(nodes.map((part) => stopJvm(s, part)));
  log(`${nodes.join(", ")} stopped`);
  await stopPostgres(s);
  log("postgres stopped");
}

/**
 * Sends `signal` to the recorded process of a part (fault tests: SIGKILL a Kafka node or Connect, SIGSTOP and
 * SIGCONT). Returns the pid signalled, or undefined when the part is not running. A killed part is restarted with
 * its own start function (`startKafkaNode`, `startConnect`, `startPostgres`) or `stackUp`.
 */
export function signalPart(s: StackSettings, part: Part, signal: NodeJS.Signals): number | undefined {
  const record = readPid(s.pids, part);
  if (!isAlive(record)) return undefined;
  process.kill(record.pid, signal);
  return record.pid;
}

function portOf(s: StackSettings, part: Part): number {
  if (part.startsWith("kafka")) return kafkaBrokerPort(s, part === "kafka" ? 1 : Number(part.slice(6)));
  return { postgres: s.pgPort, registry: s.registryPort, connect: s.connectPort }[part as string] as number;
}

/** Each part's state: "up" when its recorded process runs and answers on its port. */
async function partStates(s: StackSettings) {
  return Promise.all(
    stackParts(s).map(async (part) => {
      const record = readPid(s.pids, part);
      const alive = isAlive(record);
      const open = await portOpen(s.host, portOf(s, part));
      const state = alive ? (open ? "up" : "starting") : open ? "port taken by another process" : "down";
      return { part, state, pid: alive ? record.pid : undefined, port: portOf(s, part) };
    }),
  );
}

/** True when every part runs and answers on its port (what `status` prints, without printing). */
export async function stackIsUp(s: StackSettings): Promise<boolean> {
  return (await partStates(s)).every(({ state }) => state === "up");
}

/** Prints one line per part; true when every part runs and answers on its port. */
export async function stackStatus(s: StackSettings): Promise<boolean> {
  const states = await partStates(s);
  for (const { part, state, pid, port } of states) {
    console.log(`${part.padEnd(9)} ${state.padEnd(12)} pid ${pid ?? "-"}  ${s.host}:${port}`);
  }
  return states.every(({ state }) => state === "up");
}
