import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createKafka, ensureTopics, pipelineTopics } from "@crm/kafka";
import { adminUrl } from "./postgres.ts";
import type { Toolchain } from "./prereqs.ts";
import { forgetPid, isAlive, readPid, recordPid, run, spawnDaemon, stopProcess, waitUntil } from "./proc.ts";
import type { StackSettings } from "./settings.ts";

export type JvmPart = "kafka" | "connect" | "registry";

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

/** `quickStart` trades peak speed for start time and memory (C1 only): for Connect and the registry, not Kafka. */
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

function startJvm(
  s: StackSettings,
  java: string,
  part: JvmPart,
  args: string[],
  env: NodeJS.ProcessEnv = {},
) {
  if (isAlive(readPid(s.pids, part))) return;
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

// ---- Kafka (KRaft, combined broker + controller) ----

function kafkaProperties(s: StackSettings): string {
  return [
    "process.roles=broker,controller",
    "node.id=1",
    `controller.quorum.bootstrap.servers=${s.host}:${s.controllerPort}`,
    `listeners=PLAINTEXT://${s.host}:${s.kafkaPort},CONTROLLER://${s.host}:${s.controllerPort}`,
    `advertised.listeners=PLAINTEXT://${s.host}:${s.kafkaPort}`,
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=PLAINTEXT",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    `log.dirs=${join(s.dir, "kafka", "data")}`,
    `num.partitions=${s.partitions}`,
    "auto.create.topics.enable=false",
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=12",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
    "log.retention.hours=168",
    "log.segment.bytes=134217728",
    "num.network.threads=2",
    "num.io.threads=4",
    "",
  ].join("\n");
}

export async function startKafka(s: StackSettings, tools: Toolchain): Promise<void> {
  const dir = join(s.dir, "kafka");
  const data = join(dir, "data");
  const props = join(dir, "server.properties");
  mkdirSync(dir, { recursive: true });
  writeFileSync(props, kafkaProperties(s));
  const cp = join(libDir(s), "kafka", "*");
  if (!existsSync(join(data, "meta.properties"))) {
    // A Kafka cluster id is 16 random bytes in URL-safe base64 without padding.
    const clusterId = randomBytes(16).toString("base64url");
    run(tools.java, [
      ...jvmOptions(s, "256m", true),
      "-cp",
      cp,
      "kafka.tools.StorageTool",
      "format",
      "--standalone",
      "-t",
      clusterId,
      "-c",
      props,
    ]);
  }
  startJvm(s, tools.java, "kafka", [
    ...jvmOptions(s, s.kafkaHeap),
    `-Dkafka.logs.dir=${s.logs}`,
    "-cp",
    cp,
    "kafka.Kafka",
    props,
  ]);
  const kafka = createKafka({ brokers: [`${s.host}:${s.kafkaPort}`], clientId: "stack-launcher" });
  const admin = kafka.admin();
  await waitUntil(
    "kafka",
    async () => {
      await admin.connect();
      const cluster = await admin.describeCluster();
      return cluster.brokers.length > 0 && cluster.controller !== null;
    },
    { timeoutMs: s.readyTimeoutMs, logFile: logFile(s, "kafka"), alive: alive(s, "kafka") },
  );
  try {
    await ensureTopics(admin, pipelineTopics(s.partitions));
  } finally {
    await admin.disconnect();
  }
}

// ---- Kafka Connect (distributed) with Debezium on plugin.path ----

function connectProperties(s: StackSettings): string {
  // The default cluster keeps Connect's conventional topic names; any other group gets its own.
  const topic = (kind: string) =>
    s.connectGroup === "crm-connect" ? `_connect-${kind}` : `_${s.connectGroup}-${kind}`;
  return [
    `bootstrap.servers=${s.host}:${s.kafkaPort}`,
    `group.id=${s.connectGroup}`,
    "key.converter=org.apache.kafka.connect.storage.StringConverter",
    "value.converter=org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable=false",
    `config.storage.topic=${topic("configs")}`,
    `offset.storage.topic=${topic("offsets")}`,
    `status.storage.topic=${topic("status")}`,
    "config.storage.replication.factor=1",
    "offset.storage.replication.factor=1",
    "offset.storage.partitions=5",
    "status.storage.replication.factor=1",
    "status.storage.partitions=1",
    // Offsets (the slot position Debezium confirms) are flushed often so a crash replays little.
    "offset.flush.interval.ms=1000",
    `listeners=http://${s.host}:${s.connectPort}`,
    `rest.advertised.host.name=${s.host}`,
    `rest.advertised.port=${s.connectPort}`,
    `plugin.path=${join(libDir(s), "connect-plugins")}`,
    "plugin.discovery=hybrid_warn",
    "topic.creation.enable=true",
    "",
  ].join("\n");
}

export async function startConnect(s: StackSettings, tools: Toolchain): Promise<void> {
  const dir = join(s.dir, "connect");
  mkdirSync(dir, { recursive: true });
  const props = join(dir, "connect-distributed.properties");
  writeFileSync(props, connectProperties(s));
  startJvm(s, tools.java, "connect", [
    ...jvmOptions(s, s.connectHeap, true),
    "-cp",
    join(libDir(s), "kafka", "*"),
    "org.apache.kafka.connect.cli.ConnectDistributed",
    props,
  ]);
  const url = `http://${s.host}:${s.connectPort}`;
  await waitUntil(
    "kafka connect",
    async () => {
      const res = await fetch(`${url}/connector-plugins`, { signal: AbortSignal.timeout(2_000) });
      if (!res.ok) return false;
      const plugins = (await res.json()) as { class: string }[];
      return plugins.some((p) => p.class === "io.debezium.connector.postgresql.PostgresConnector");
    },
    { timeoutMs: s.readyTimeoutMs, logFile: logFile(s, "connect"), alive: alive(s, "connect") },
  );
}

// ---- Apicurio Registry (Quarkus fast-jar), stored in the stack's Postgres ----

export async function startRegistry(s: StackSettings, tools: Toolchain): Promise<void> {
  const admin = new URL(adminUrl(s, "registry"));
  startJvm(
    s,
    tools.java21,
    "registry",
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
      APICURIO_DATASOURCE_USERNAME: decodeURIComponent(admin.username),
      APICURIO_DATASOURCE_PASSWORD: decodeURIComponent(admin.password),
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
  if (record) await stopProcess(record, "SIGTERM", part === "kafka" ? 60_000 : 30_000);
  forgetPid(s.pids, part);
}

export function jvmLogFile(s: StackSettings, part: JvmPart): string {
  return logFile(s, part);
}
