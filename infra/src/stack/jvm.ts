import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stackEnv } from "@crm/config";
import { alignTopicConfigs, createKafka, ensureTopics, pipelineTopics } from "@crm/kafka";
import {
  addScramArgs,
  addScramUserArgs,
  applyKafkaAcls,
  brokerAuthProperties,
  connectCredentials,
  credentialsOf,
  javaClientAuthProperties,
  KAFKA_AUTH_MARKER,
  type KafkaSecrets,
  kafkaSecrets,
  missingScramUsers,
  recordScramUsers,
  type StackPrincipal,
  scramUsersOf,
} from "./kafka-auth.ts";
import type { Toolchain } from "./prereqs.ts";
import {
  assertPortsFree,
  forgetPid,
  isAlive,
  readPid,
  recordPid,
  run,
  spawnDaemon,
  stopProcess,
  waitUntil,
} from "./proc.ts";
import { CONNECT_REST_USER, hasOwnSecrets, ROLES, stackSecrets } from "./secrets.ts";
import { minInsyncReplicas, replicationFactor, type StackSettings } from "./settings.ts";

/** A JVM the launcher runs: one Kafka node ("kafka" single-node, "kafka-N" in cluster mode), Connect, registry. */
export type JvmPart = "kafka" | `kafka-${number}` | "connect" | "registry";

const libDir = (s: StackSettings) => s.lib;
const logFile = (s: StackSettings, part: string) => join(s.logs, `${part}.log`);
const pomFile = (s: StackSettings) => join(s.root, "infra", "java", "pom.xml");

/**
 * Resolves Kafka, Connect, the Debezium plugin and Apicurio from Maven Central into `.stack/lib`, once per
 * version of the pom (its hash is stamped next to the jars).
 */
export function resolveJars(s: StackSettings, tools: Toolchain, log: (line: string) => void): void {
  const pom = readFileSync(pomFile(s));
  const stamp = join(libDir(s), ".pom-sha1");
  const hash = createHash("sha1").update(pom).digest("hex");
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === hash) return;
  log("resolving Kafka, Connect, Debezium and Apicurio from Maven (first run only)...");
  rmSync(libDir(s), { recursive: true, force: true });
  run(tools.mvn, ["-q", "-B", "-f", pomFile(s), "package", `-Dstack.lib.dir=${s.lib}`]);
  writeFileSync(stamp, hash);
}

/**
 * `quickStart` trades peak speed for start time and memory (C1 only): for the registry and the one-shot tools, whose
 * work is start-up. Not for Kafka, nor Connect, which decodes and routes every outbox row: with C1 only it cost
 * twice the CPU per event (issue 13: 195 -> 92 µs per event at 1,000 events/s in the bench, same RSS).
 */
function jvmOptions(s: StackSettings, heap: string, quickStart = false): string[] {
  return [
    `-Xms64m`,
    `-Xmx${heap}`,
    "-XX:+UseSerialGC",
    ...(quickStart ? ["-XX:TieredStopAtLevel=1"] : []),
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
    `-Dlog4j2.configurationFile=${join(s.root, "infra", "config", "log4j2.properties")}`,
  ];
}

/** Starts a JVM part unless it runs; `ports` are the ones it will listen on, checked free first. */
async function startJvm(
  s: StackSettings,
  java: string,
  part: JvmPart,
  ports: number[],
  args: string[],
  env: NodeJS.ProcessEnv = {},
) {
  if (isAlive(readPid(s.pids, part))) return;
  await assertPortsFree(part, s.host, ports);
  mkdirSync(s.logs, { recursive: true });
  writeFileSync(logFile(s, part), `--- started ${new Date().toISOString()}\n`, { flag: "a" });
  const pid = spawnDaemon(java, args, {
    logFile: logFile(s, part),
    cwd: s.dir,
    env: { ...process.env, ...env },
  });
  recordPid(s.pids, part, pid);
}

function alive(s: StackSettings, part: JvmPart) {
  return () => isAlive(readPid(s.pids, part));
}

// ---- Kafka (KRaft, combined broker + controller; one node, or a three-node cluster) ----

/** Node ids 1..N. */
export function kafkaNodeIds(s: StackSettings): number[] {
  return Array.from({ length: s.kafkaNodes }, (_, i) => i + 1);
}

/** The single node keeps the name "kafka" (its pid file, log and data dir); cluster nodes are "kafka-N". */
export function kafkaPartName(s: StackSettings, id: number): JvmPart {
  return s.kafkaNodes === 1 ? "kafka" : `kafka-${id}`;
}

export function kafkaBrokerPort(s: StackSettings, id: number): number {
  return s.kafkaPort + 2 * (id - 1);
}

function controllerPort(s: StackSettings, id: number): number {
  return s.controllerPort + 2 * (id - 1);
}

/** `host:port` of every broker, for clients' bootstrap lists and `KAFKA_BROKERS`. */
export function kafkaBrokers(s: StackSettings): string[] {
  return kafkaNodeIds(s).map((id) => `${s.host}:${kafkaBrokerPort(s, id)}`);
}

function kafkaProperties(s: StackSettings, id: number, secrets: KafkaSecrets): string {
  const rf = replicationFactor(s);
  const isr = minInsyncReplicas(s);
  // One node formats itself as a standalone dynamic quorum; a cluster uses a static voter set of all nodes.
  const quorum =
    s.kafkaNodes === 1
      ? `controller.quorum.bootstrap.servers=${s.host}:${controllerPort(s, 1)}`
      : `controller.quorum.voters=${kafkaNodeIds(s)
          .map((n) => `${n}@${s.host}:${controllerPort(s, n)}`)
          .join(",")}`;
  return [
    "process.roles=broker,controller",
    `node.id=${id}`,
    quorum,
    `listeners=BROKER://${s.host}:${kafkaBrokerPort(s, id)},CONTROLLER://${s.host}:${controllerPort(s, id)}`,
    `advertised.listeners=BROKER://${s.host}:${kafkaBrokerPort(s, id)}`,
    "controller.listener.names=CONTROLLER",
    ...brokerAuthProperties(secrets),
    `log.dirs=${join(kafkaDir(s, id), "data")}`,
    `num.partitions=${s.partitions}`,
    "auto.create.topics.enable=false",
    // Durability: with acks=all a write needs `isr` replicas; a replica that was not in sync never becomes leader.
    `default.replication.factor=${rf}`,
    `min.insync.replicas=${isr}`,
    "unclean.leader.election.enable=false",
    `offsets.topic.replication.factor=${rf}`,
    "offsets.topic.num.partitions=12",
    `transaction.state.log.replication.factor=${rf}`,
    `transaction.state.log.min.isr=${isr}`,
    `share.coordinator.state.topic.replication.factor=${rf}`,
    `share.coordinator.state.topic.min.isr=${isr}`,
    "group.initial.rebalance.delay.ms=0",
    "log.retention.hours=168",
    "log.segment.bytes=134217728",
    "num.network.threads=2",
    "num.io.threads=4",
    "",
  ].join("\n");
}

function kafkaDir(s: StackSettings, id: number): string {
  return join(s.dir, kafkaPartName(s, id));
}

/** Writes the node's properties and formats its storage the first time; returns the properties file. */
function prepareKafkaNode(s: StackSettings, tools: Toolchain, id: number, clusterId: string): string {
  const dir = kafkaDir(s, id);
  const props = join(dir, "server.properties");
  mkdirSync(dir, { recursive: true });
  const secrets = kafkaSecrets(s);
  // It holds the nodes' own password.
  writeFileSync(props, kafkaProperties(s, id, secrets), { mode: 0o600 });
  chmodSync(props, 0o600);
  if (!existsSync(join(dir, "data", "meta.properties"))) {
    run(tools.java, [
      ...jvmOptions(s, "256m", true),
      "-cp",
      join(libDir(s), "kafka", "*"),
      "kafka.tools.StorageTool",
      "format",
      ...(s.kafkaNodes === 1 ? ["--standalone"] : []),
      "-t",
      clusterId,
      "-c",
      props,
      // The SCRAM users exist from the first start: brokers authenticate to each other with one of them.
      ...addScramArgs(secrets),
    ]);
    writeFileSync(join(s.dir, KAFKA_AUTH_MARKER), "scram-sha-512\n");
    recordScramUsers(s, Object.keys(secrets) as StackPrincipal[]);
  }
  return props;
}

/** The cluster id, generated once per stack and shared by every node (16 random bytes, URL-safe base64). */
function kafkaClusterId(s: StackSettings): string {
  const file = join(s.dir, "kafka-cluster-id");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const id = randomBytes(16).toString("base64url");
  mkdirSync(s.dir, { recursive: true });
  writeFileSync(file, id);
  return id;
}

async function launchKafkaNode(s: StackSettings, tools: Toolchain, id: number): Promise<void> {
  if (isAlive(readPid(s.pids, kafkaPartName(s, id)))) return;
  const props = prepareKafkaNode(s, tools, id, kafkaClusterId(s));
  await startJvm(
    s,
    tools.java,
    kafkaPartName(s, id),
    [kafkaBrokerPort(s, id), controllerPort(s, id)],
    [
      ...jvmOptions(s, s.kafkaHeap),
      `-Dkafka.logs.dir=${s.logs}`,
      "-cp",
      join(libDir(s), "kafka", "*"),
      "kafka.Kafka",
      props,
    ],
  );
}

/** Waits until `expected` brokers (at least this node) are registered and a controller is elected. */
async function waitForBrokers(s: StackSettings, id: number, expected: number): Promise<void> {
  const part = kafkaPartName(s, id);
  const kafka = createKafka({
    brokers: [`${s.host}:${kafkaBrokerPort(s, id)}`],
    clientId: "stack-launcher",
    credentials: credentialsOf(kafkaSecrets(s), "admin"),
  });
  const admin = kafka.admin();
  try {
    await waitUntil(
      part,
      async () => {
        await admin.connect();
        const cluster = await admin.describeCluster();
        return (
          cluster.brokers.length >= expected &&
          cluster.brokers.some((b) => b.nodeId === id) &&
          cluster.controller !== null
        );
      },
      { timeoutMs: s.readyTimeoutMs, logFile: logFile(s, part), alive: alive(s, part) },
    );
  } finally {
    await admin.disconnect();
  }
}

/**
 * Starts one node (unless it runs) and returns once it serves: for fault tests that kill a node and bring it
 * back. The other nodes of a cluster need not be up, but a node only serves once a controller quorum exists.
 */
export async function startKafkaNode(s: StackSettings, tools: Toolchain, id: number): Promise<void> {
  await launchKafkaNode(s, tools, id);
  await waitForBrokers(s, id, 1);
}

/** Starts every node at once (a cluster's controllers need a majority to elect), then creates the topics. */
export async function startKafka(s: StackSettings, tools: Toolchain): Promise<void> {
  for (const id of kafkaNodeIds(s)) await launchKafkaNode(s, tools, id);
  await Promise.all(kafkaNodeIds(s).map((id) => waitForBrokers(s, id, s.kafkaNodes)));
  addMissingScramUsers(s, tools);
  const admin = createKafka({
    brokers: kafkaBrokers(s),
    clientId: "stack-launcher",
    credentials: credentialsOf(kafkaSecrets(s), "admin"),
  }).admin();
  try {
    await admin.connect();
    const topics = pipelineTopics(s.partitions, replicationFactor(s), s.eventRetentionMs);
    await ensureTopics(admin, topics);
    // a retention changed in the settings reaches the topics that exist (issue 18)
    await alignTopicConfigs(admin, topics);
    await applyKafkaAcls(admin, s);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Adds the SCRAM users of principals this code knows and the stack's metadata does not (a stack formatted before
 * they existed), through the admin principal. The command line holds the password, so a failure reports only
 * the principal and Kafka's message.
 */
function addMissingScramUsers(s: StackSettings, tools: Toolchain): void {
  const missing = missingScramUsers(s);
  if (missing.length === 0) return;
  const secrets = kafkaSecrets(s);
  const clientConfig = join(s.dir, "admin-client.properties");
  writeFileSync(clientConfig, `${javaClientAuthProperties(credentialsOf(secrets, "admin")).join("\n")}\n`, {
    mode: 0o600,
  });
  try {
    for (const principal of missing) {
      const result = spawnSync(
        tools.java,
        [
          ...jvmOptions(s, "256m", true),
          "-cp",
          join(libDir(s), "kafka", "*"),
          "kafka.admin.ConfigCommand",
          "--bootstrap-server",
          kafkaBrokers(s).join(","),
          "--command-config",
          clientConfig,
          ...addScramUserArgs(secrets, principal),
        ],
        { encoding: "utf8" },
      );
      if (result.status !== 0) {
        throw new Error(`adding Kafka user ${principal} failed: ${(result.stderr || "").split("\n")[0]}`);
      }
      recordScramUsers(s, [...scramUsersOf(s), principal]);
    }
  } finally {
    rmSync(clientConfig, { force: true });
  }
}

// ---- Kafka Connect (distributed) with Debezium on plugin.path ----

function connectProperties(s: StackSettings): string {
  // The default cluster keeps Connect's conventional topic names; any other group gets its own.
  const topic = (kind: string) =>
    s.connectGroup === "crm-connect" ? `_connect-${kind}` : `_${s.connectGroup}-${kind}`;
  const credentials = connectCredentials(s);
  // The worker's own clients and the ones it makes for connectors (producer., consumer., admin.) all need it.
  const auth = credentials
    ? ["", "producer.", "consumer.", "admin."].flatMap((prefix) =>
        javaClientAuthProperties(credentials, prefix),
      )
    : [];
  return [
    `bootstrap.servers=${kafkaBrokers(s).join(",")}`,
    ...auth,
    `group.id=${s.connectGroup}`,
    "key.converter=org.apache.kafka.connect.storage.StringConverter",
    "value.converter=org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable=false",
    `config.storage.topic=${topic("configs")}`,
    `offset.storage.topic=${topic("offsets")}`,
    `status.storage.topic=${topic("status")}`,
    `config.storage.replication.factor=${replicationFactor(s)}`,
    `offset.storage.replication.factor=${replicationFactor(s)}`,
    "offset.storage.partitions=5",
    `status.storage.replication.factor=${replicationFactor(s)}`,
    "status.storage.partitions=1",
    // Offsets (the slot position Debezium confirms) are flushed often so a crash replays little.
    "offset.flush.interval.ms=1000",
    // Loopback only, and every request needs the REST user (rest-users.properties through rest-jaas.conf).
    `listeners=http://${s.host}:${s.connectPort}`,
    "rest.extension.classes=org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension",
    // Connector configs name secrets as ${env:NAME}; the worker resolves them, GET /config shows the placeholder.
    // Only the Debezium password may be named, so a connector config cannot read anything else of the worker's.
    "config.providers=env",
    "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
    `config.providers.env.param.allowlist.pattern=^${CONNECT_SECRET_ENV}$`,
    `rest.advertised.host.name=${s.host}`,
    `rest.advertised.port=${s.connectPort}`,
    `plugin.path=${join(libDir(s), "connect-plugins")}`,
    "plugin.discovery=hybrid_warn",
    "topic.creation.enable=true",
    "",
  ].join("\n");
}

/** The variable of the Connect worker's environment that holds the Debezium role's password (connector.json). */
export const CONNECT_SECRET_ENV = "DEBEZIUM_DB_PASSWORD";

/**
 * The REST user's password and the Debezium password a Connect worker gets: its own stack's, or, for a worker
 * started on another stack (a test's private worker, whose dir holds no stack), that stack's `.stack/env`.
 */
function connectSecrets(s: StackSettings): { restPassword: string; debeziumPassword: string } {
  if (hasOwnSecrets(s)) {
    const secrets = stackSecrets(s);
    return { restPassword: secrets.connectRestPassword, debeziumPassword: secrets.debeziumPassword };
  }
  const env = stackEnv();
  return {
    restPassword: env.CONNECT_PASSWORD ?? "",
    debeziumPassword: decodeURIComponent(new URL(env.DEBEZIUM_DATABASE_URL ?? "postgres://x@x/x").password),
  };
}

/** The Authorization header of Connect's REST user. */
export function connectAuthorization(restPassword: string): string {
  return `Basic ${Buffer.from(`${CONNECT_REST_USER}:${restPassword}`).toString("base64")}`;
}

export async function startConnect(s: StackSettings, tools: Toolchain): Promise<void> {
  const dir = join(s.dir, "connect");
  mkdirSync(dir, { recursive: true });
  const secrets = connectSecrets(s);
  const users = join(dir, "rest-users.properties");
  writeFileSync(users, `${CONNECT_REST_USER}: ${secrets.restPassword}\n`, { mode: 0o600 });
  chmodSync(users, 0o600);
  const jaas = join(dir, "rest-jaas.conf");
  writeFileSync(
    jaas,
    `KafkaConnect {\n  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n  file="${users}";\n};\n`,
  );
  const props = join(dir, "connect-distributed.properties");
  writeFileSync(props, connectProperties(s), { mode: 0o600 });
  chmodSync(props, 0o600);
  await startJvm(
    s,
    tools.java,
    "connect",
    [s.connectPort],
    [
      ...jvmOptions(s, s.connectHeap),
      `-Djava.security.auth.login.config=${jaas}`,
      "-cp",
      join(libDir(s), "kafka", "*"),
      "org.apache.kafka.connect.cli.ConnectDistributed",
      props,
    ],
    { [CONNECT_SECRET_ENV]: secrets.debeziumPassword },
  );
  const url = `http://${s.host}:${s.connectPort}`;
  await waitUntil(
    "kafka connect",
    async () => {
      const res = await fetch(`${url}/connector-plugins`, {
        headers: { authorization: connectAuthorization(secrets.restPassword) },
        signal: AbortSignal.timeout(2_000),
      });
      if (!res.ok) return false;
      const plugins = (await res.json()) as { class: string }[];
      return plugins.some((p) => p.class === "io.debezium.connector.postgresql.PostgresConnector");
    },
    { timeoutMs: s.readyTimeoutMs, logFile: logFile(s, "connect"), alive: alive(s, "connect") },
  );
}

// ---- Apicurio Registry (Quarkus fast-jar), stored in the stack's Postgres ----

export async function startRegistry(s: StackSettings, tools: Toolchain): Promise<void> {
  await startJvm(
    s,
    tools.java21,
    "registry",
    [s.registryPort, s.registryManagementPort],
    [
      ...jvmOptions(s, s.registryHeap, true),
      `-Dquarkus.http.port=${s.registryPort}`,
      `-Dquarkus.http.host=${s.host}`,
      `-Dquarkus.management.port=${s.registryManagementPort}`,
      `-Dquarkus.management.host=${s.host}`,
      "-jar",
      join(libDir(s), "apicurio", "quarkus-run.jar"),
    ],
    {
      APICURIO_STORAGE_KIND: "sql",
      APICURIO_STORAGE_SQL_KIND: "postgresql",
      APICURIO_DATASOURCE_URL: `jdbc:postgresql://${s.host}:${s.pgPort}/registry`,
      // Its own role, owner of its own database only (postgres.ts); never the superuser.
      APICURIO_DATASOURCE_USERNAME: ROLES.registry,
      APICURIO_DATASOURCE_PASSWORD: stackSecrets(s).registryPassword,
      APICURIO_DATASOURCE_JDBC_INITIAL_SIZE: "2",
      APICURIO_DATASOURCE_JDBC_MIN_SIZE: "2",
      APICURIO_DATASOURCE_JDBC_MAX_SIZE: "10",
      // The Confluent-compatible API answers with the registry's global ids, as Confluent clients expect.
      APICURIO_CCOMPAT_LEGACY_ID_MODE_ENABLED: "true",
    },
  );
  const url = `http://${s.host}:${s.registryPort}`;
  await waitUntil(
    "apicurio registry",
    async () => (await fetch(`${url}/apis/ccompat/v7/subjects`, { signal: AbortSignal.timeout(2_000) })).ok,
    { timeoutMs: s.readyTimeoutMs, logFile: logFile(s, "registry"), alive: alive(s, "registry") },
  );
}

/** SIGTERM lets each JVM close cleanly (Kafka flushes, Connect leaves its group); SIGKILL after the grace. */
export async function stopJvm(s: StackSettings, part: JvmPart): Promise<void> {
  const record = readPid(s.pids, part);
  if (record) await stopProcess(record, "SIGTERM", part.startsWith("kafka") ? 60_000 : 30_000);
  forgetPid(s.pids, part);
}

export function jvmLogFile(s: StackSettings, part: JvmPart): string {
  return logFile(s, part);
}
