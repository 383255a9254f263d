import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stackDir } from "@crm/config";
import { createKafka, pipelineTopics, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import type { Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kafkaBrokers, kafkaPartName, startKafka, startKafkaNode, stopJvm } from "./jvm.ts";
import { credentialsOf, kafkaSecrets } from "./kafka-auth.ts";
import { ensureToolchain, type Toolchain } from "./prereqs.ts";
import { isAlive, readPid } from "./proc.ts";
import { type StackSettings, stackSettings } from "./settings.ts";
import { signalPart } from "./stack.ts";

// Cluster mode's Kafka part on its own dir and ports (below the ephemeral range): three KRaft nodes, replication
// factor 3, min.insync.replicas 2. Only Kafka is started; the full cluster stack is exercised by `npm run test:faults`.
const dir = mkdtempSync(join(tmpdir(), "crm-cluster-test-"));
chmodSync(dir, 0o755);
const s: StackSettings = stackSettings({
  ...process.env,
  STACK_DIR: dir,
  STACK_LIB_DIR: join(stackDir(), "lib"),
  STACK_MODE: "cluster",
  STACK_KAFKA_PORT: "19192",
  STACK_KAFKA_CONTROLLER_PORT: "19193",
  STACK_KAFKA_HEAP: "256m",
  STACK_PARTITIONS: "3",
});
let tools: Toolchain;
let kafka: Kafka;

/** One acks=all send with a short bound; the error's kafkajs type when the cluster refuses it. */
async function send(value: string): Promise<"ok" | string> {
  const producer = kafka.producer({ idempotent: true, retry: { retries: 2, maxRetryTime: 3_000 } });
  try {
    await producer.connect();
    await producer.send({ topic: TOPICS.raw, acks: -1, timeout: 3_000, messages: [{ key: value, value }] });
    return "ok";
  } catch (error) {
    const cause = (error as { cause?: { type?: string } }).cause;
    return cause?.type ?? (error as Error).name;
  } finally {
    await producer.disconnect().catch(() => {});
  }
}

/** Sends until acknowledged: leadership moves off a killed node only after its broker session times out (~9 s). */
async function sendUntilAcknowledged(value: string, timeoutMs = 60_000): Promise<string> {
  let result = "";
  const acknowledged = async () => {
    result = await send(value);
    return result === "ok";
  };
  await poll(`${value} acknowledged`, acknowledged, { timeoutMs, intervalMs: 0, throwOnTimeout: false });
  return result;
}

const waitDead = (part: "kafka-2" | "kafka-3") =>
  poll(`${part} gone`, () => !isAlive(readPid(s.pids, part)), { timeoutMs: 120_000, intervalMs: 100 });

async function readAll(): Promise<string[]> {
  const consumer = kafka.consumer({ groupId: `cluster-test-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.raw, fromBeginning: true });
  const values: string[] = [];
  const admin = kafka.admin();
  await admin.connect();
  const total = (await admin.fetchTopicOffsets(TOPICS.raw)).reduce((n, p) => n + Number(p.high), 0);
  await admin.disconnect();
  await new Promise<void>((resolve) => {
    void consumer.run({
      eachMessage: async ({ message }) => {
        values.push(String(message.value));
        if (values.length >= total) resolve();
      },
    });
  });
  await consumer.disconnect();
  return values;
}

describe("stack launcher, cluster mode", () => {
  beforeAll(async () => {
    tools = ensureToolchain(() => {});
    try {
      await startKafka(s, tools);
    } catch (error) {
      // Three JVMs starting beside other test files on two cores: a node has exited during start-up in one CI run
      // in several. Its log says why (printed here, the dir is removed afterwards); the cluster is started again
      // once, as this file tests the cluster's behaviour, not a first start under load.
      for (const id of [1, 2, 3]) {
        const log = join(s.logs, `${kafkaPartName(s, id)}.log`);
        if (existsSync(log))
          console.error(
            `${log} (last lines):\n${readFileSync(log, "utf8").split("\n").slice(-30).join("\n")}`,
          );
      }
      console.error(`cluster start failed (${(error as Error).message}); starting it again`);
      await Promise.all([1, 2, 3].map((id) => stopJvm(s, kafkaPartName(s, id))));
      await startKafka(s, tools);
    }
    kafka = createKafka({
      brokers: kafkaBrokers(s),
      clientId: "cluster-test",
      credentials: credentialsOf(kafkaSecrets(s), "admin"),
    });
  }, 180_000);

  afterAll(async () => {
    await Promise.all([1, 2, 3].map((id) => stopJvm(s, kafkaPartName(s, id))));
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it("creates every pipeline topic with three in-sync replicas and min.insync.replicas=2", async () => {
    const admin = kafka.admin();
    await admin.connect();
    try {
      const topics = pipelineTopics(s.partitions).map((t) => t.topic);
      const { topics: meta } = await admin.fetchTopicMetadata({ topics });
      for (const topic of meta) {
        for (const partition of topic.partitions) {
          expect(partition.replicas.sort()).toEqual([1, 2, 3]);
          expect(partition.isr.sort()).toEqual([1, 2, 3]);
        }
      }
      const { resources } = await admin.describeConfigs({
        includeSynonyms: false,
        resources: topics.map((name) => ({
          type: 2,
          name,
          configNames: ["min.insync.replicas", "unclean.leader.election.enable"],
        })),
      });
      for (const resource of resources) {
        const config = Object.fromEntries(resource.configEntries.map((c) => [c.configName, c.configValue]));
        expect(config).toEqual({ "min.insync.replicas": "2", "unclean.leader.election.enable": "false" });
      }
    } finally {
      await admin.disconnect();
    }
  });

  it("acknowledges with one node down, refuses with two down, and keeps every acknowledged write", async () => {
    const acknowledged: string[] = [];
    expect(await send("all-up")).toBe("ok");
    acknowledged.push("all-up");

    expect(signalPart(s, "kafka-3", "SIGKILL")).toBeGreaterThan(0);
    await waitDead("kafka-3");
    expect(await sendUntilAcknowledged("one-down")).toBe("ok");
    acknowledged.push("one-down");

    signalPart(s, "kafka-2", "SIGKILL");
    await waitDead("kafka-2");
    // One replica left of three: the only safe answer to acks=all is a refusal (or no answer), never an ack.
    const refusals = new Set<string>();
    for (let i = 0; i < 3; i++) refusals.add(await send(`two-down-${i}`));
    expect(refusals.has("ok")).toBe(false);

    await Promise.all([startKafkaNode(s, tools, 2), startKafkaNode(s, tools, 3)]);
    expect(await sendUntilAcknowledged("recovered")).toBe("ok");
    acknowledged.push("recovered");

    const values = await readAll();
    for (const value of acknowledged) expect(values).toContain(value);
  }, 150_000);
});
