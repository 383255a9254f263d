import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
import { KAFKA_AUTH_MARKER, kafkaEnv, kafkaSecrets } from "./kafka-auth.ts";
import { adminUrl, startPostgres, stopPostgres } from "./postgres.ts";
import { ensureToolchain } from "./prereqs.ts";
import { isAlive, portOpen, readPid } from "./proc.ts";
import { CONNECT_REST_USER, ROLES, stackSecrets } from "./secrets.ts";
import { minInsyncReplicas, replicationFactor, type StackSettings } from "./settings.ts";

/** Every process of the stack by its part name: "postgres", each Kafka node, "registry", "connect". */
export type Part = "postgres" | JvmPart;

export function stackParts(s: StackSettings): Part[] {
  return ["postgres", ...kafkaNodeIds(s).map((id) => kafkaPartName(s, id)), "registry", "connect"];
}

const defaultLog = (line: string) => console.log(`[stack] ${line}`);

/** The `.stack/env` contract of SPEC section 3: every tool, test and service reads these names. */
function writeEnvFile(s: StackSettings): Record<string, string> {
  const secrets = stackSecrets(s);
  const url = (user: string, password: string) => `postgres://${user}:${password}@${s.host}:${s.pgPort}/crm`;
  const env: Record<string, string> = {
    DATABASE_URL: url(ROLES.service, secrets.servicePassword),
    DATABASE_ADMIN_URL: adminUrl(s),
    DEBEZIUM_DATABASE_URL: url(ROLES.debezium, secrets.debeziumPassword),
    // the ops console's own role: what it may read and call is granted to it alone (infra/sql/55_console.sql)
    CONSOLE_DATABASE_URL: url(ROLES.console, secrets.consoleDbPassword),
    KAFKA_BROKERS: kafkaBrokers(s).join(","),
    KAFKA_REPLICATION_FACTOR: String(replicationFactor(s)),
    KAFKA_MIN_INSYNC_REPLICAS: String(minInsyncReplicas(s)),
    SCHEMA_REGISTRY_URL: `http://${s.host}:${s.registryPort}/apis/ccompat/v7`,
    CONNECT_URL: `http://${s.host}:${s.connectPort}`,
    // Connect's REST API asks for these (tools send them as Basic auth; see connectFetch).
    CONNECT_USERNAME: CONNECT_REST_USER,
    CONNECT_PASSWORD: secrets.connectRestPassword,
    INGEST_URL: `http://${s.host}:${s.ingestPort}`,
    INGEST_PORT: String(s.ingestPort),
    SEGMENT_URL: `http://${s.host}:${s.segmentPort}`,
    SEGMENT_PORT: String(s.segmentPort),
    WORKER_URL: `http://${s.host}:${s.workerPort}`,
    WORKER_PORT: String(s.workerPort),
    SEGMENTS_URL: `http://${s.host}:${s.segmentsPort}`,
    SEGMENTS_PORT: String(s.segmentsPort),
    AUTOMATIONS_URL: `http://${s.host}:${s.automationsPort}`,
    AUTOMATIONS_PORT: String(s.automationsPort),
    CONSOLE_URL: `http://${s.host}:${s.consolePort}`,
    CONSOLE_PORT: String(s.consolePort),
    // The ops console's operator sign-in and its cookie-signing key: only here, never in a table or a log.
    CONSOLE_OPERATOR_TOKEN: secrets.consoleOperatorToken,
    CONSOLE_SESSION_SECRET: secrets.consoleSessionSecret,
    KAFKA_PARTITIONS: String(s.partitions),
    JWT_SECRET: secrets.jwtSecret,
    LOG_HASH_SECRET: secrets.logHashSecret,
    ERASURE_HASH_SECRET: secrets.erasureHashSecret,
    AUTOMATIONS_SECRET_KEY: secrets.automationsSecretKey,
    ...kafkaEnv(kafkaSecrets(s)),
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

/**
 * A stack dir whose Kafka was formatted before authentication has no SCRAM users, and they can only be written at
 * format time: its Kafka (running or not) and Connect are stopped and Kafka's data is formatted again. Topics,
 * consumer offsets and Connect's stored config and offsets go (the launcher and `preparePipeline` recreate the
 * topics and the connector; the replication slot in Postgres keeps Debezium's position); Postgres is untouched.
 */
async function migrateToAuthenticatedKafka(s: StackSettings, log: (line: string) => void): Promise<void> {
  if (existsSync(join(s.dir, KAFKA_AUTH_MARKER))) return;
  const formatted = readdirSync(s.dir).filter(
    (entry) => /^kafka(-\d+)?$/.test(entry) && existsSync(join(s.dir, entry, "data", "meta.properties")),
  );
  if (formatted.length === 0) return;
  log(
    `${s.dir} predates Kafka authentication: stopping Kafka, Connect and the registry, formatting Kafka with SCRAM`,
  );
  // Connect and the registry restart too: with Kafka's credentials, and the registry as its own role.
  await stopJvm(s, "connect");
  await stopJvm(s, "registry");
  await Promise.all(kafkaNodeIds(s).map((id) => stopJvm(s, kafkaPartName(s, id))));
  for (const entry of formatted) rmSync(join(s.dir, entry), { recursive: true, force: true });
}

/** `npm run stack -- up`: starts whatever part is not running, in order, and writes `<dir>/env`. */
export async function stackUp(s: StackSettings, log = defaultLog): Promise<Record<string, string>> {
  const started = Date.now();
  mkdirSync(s.logs, { recursive: true });
  assertSameShape(s);
  await migrateToAuthenticatedKafka(s, log);
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
