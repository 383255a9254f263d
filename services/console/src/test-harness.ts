import { randomBytes, randomUUID } from "node:crypto";
import { hashIngestKey } from "@crm/auth";
import { createKafka, ensureTopics, type Kafka } from "@crm/kafka";
import { eventually, freePort, type RunningService, startService } from "@crm/testing";
import type pg from "pg";

// Test support for the console: private copies of the raw and DLQ topics (the console principal's ACLs are
// prefixes, so it may read and write them), an ingest key, and the real processes on free ports.

export interface ConsoleTopics {
  rawTopic: string;
  dlqTopic: string;
  groupId: string;
}

export async function createConsoleTopics(brokers: string[], partitions = 3): Promise<ConsoleTopics> {
  const suffix = randomUUID().slice(0, 8);
  const names = {
    rawTopic: `events.raw.v1.test-console-${suffix}`,
    dlqTopic: `events.dlq.v1.test-console-${suffix}`,
    groupId: `resolver-worker-test-console-${suffix}`,
  };
  const admin = createKafka({ brokers, clientId: "console-test-admin" }).admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [
      { topic: names.rawTopic, numPartitions: partitions },
      { topic: names.dlqTopic, numPartitions: partitions },
    ]);
    await eventually("console test topics have leaders", async () => {
      await admin.fetchTopicOffsets(names.rawTopic);
      await admin.fetchTopicOffsets(names.dlqTopic);
      return true;
    });
  } finally {
    await admin.disconnect();
  }
  return names;
}

export async function dropConsoleTopics(brokers: string[], topics: ConsoleTopics): Promise<void> {
  const admin = createKafka({ brokers, clientId: "console-test-admin" }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topics.rawTopic, topics.dlqTopic] }).catch(() => {});
  await admin.deleteGroups([topics.groupId]).catch(() => {});
  await admin.disconnect();
}

/** A new ingest key of `businessId` (the shape newIngestKey() makes), stored hashed as the CLI stores it. */
export async function createIngestKey(admin: pg.Pool, businessId: string): Promise<string> {
  const key = `ik_${randomBytes(32).toString("base64url")}`;
  await admin.query(
    "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, $2, 'console test')",
    [businessId, hashIngestKey(key)],
  );
  return key;
}

/** The tools' admin producer (writes anything anywhere): poison messages and hand-made dead letters. */
export function adminKafka(brokers: string[]): Kafka {
  return createKafka({ brokers, clientId: "console-test-producer" });
}

export interface ConsoleProcesses {
  api: RunningService;
  worker: RunningService;
  console: RunningService;
  consoleUrl: string;
  ingestUrl: string;
}

/** ingest-api, resolver-worker and the console on the test's topics, each on free ports. */
export async function startConsoleProcesses(topics: ConsoleTopics): Promise<ConsoleProcesses> {
  const [apiPort, workerPort, consolePort] = [await freePort(), await freePort(), await freePort()];
  const ingestUrl = `http://127.0.0.1:${apiPort}`;
  const workerUrl = `http://127.0.0.1:${workerPort}`;
  const [api, worker] = await Promise.all([
    startService({
      entry: "services/ingest-api/src/main.ts",
      env: { INGEST_PORT: String(apiPort), INGEST_TOPIC: topics.rawTopic },
      healthUrl: `${ingestUrl}/healthz`,
    }),
    startService({
      entry: "services/resolver-worker/src/main.ts",
      env: {
        WORKER_PORT: String(workerPort),
        WORKER_TOPIC: topics.rawTopic,
        WORKER_DLQ_TOPIC: topics.dlqTopic,
        WORKER_GROUP_ID: topics.groupId,
        WORKER_COMMIT_INTERVAL_MS: "500",
        WORKER_SESSION_TIMEOUT_MS: "10000",
      },
      healthUrl: `${workerUrl}/readyz`,
      timeoutMs: 90_000,
    }),
  ]);
  const consoleUrl = `http://127.0.0.1:${consolePort}`;
  const console = await startService({
    entry: "services/console/src/main.ts",
    env: {
      CONSOLE_PORT: String(consolePort),
      CONSOLE_RAW_TOPIC: topics.rawTopic,
      CONSOLE_DLQ_TOPIC: topics.dlqTopic,
      INGEST_URL: ingestUrl,
      WORKER_URL: workerUrl,
      CONSOLE_SAMPLE_MS: "1000",
      CONSOLE_LAG_GROUPS: topics.groupId,
      // nothing answers there: the overview shows them as not running
      SEGMENTS_URL: `http://127.0.0.1:${await freePort()}`,
      AUTOMATIONS_URL: `http://127.0.0.1:${await freePort()}`,
    },
    healthUrl: `${consoleUrl}/healthz`,
  });
  return { api, worker, console, consoleUrl, ingestUrl };
}
