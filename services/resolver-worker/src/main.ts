import { parseEnv } from "@crm/config";
import { assertCannotBypassRls, createPool, postgresAnswers } from "@crm/db";
import { errorMessage } from "@crm/errors";
import { createKafka, KafkaEventProducer, kafkaCredentials } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { startHealthServer } from "@crm/process";
import { ResolverConsumer } from "./consumer.ts";
import { WorkerEnv } from "./env.ts";
import { createWorkerMetrics } from "./metrics.ts";

const env = parseEnv(WorkerEnv);
const logger = createLogger("resolver-worker");
const pool = createPool({
  connectionString: env.DATABASE_URL,
  applicationName: "resolver-worker",
  max: env.DATABASE_POOL_SIZE,
});
await assertCannotBypassRls(pool);

const kafka = createKafka({
  brokers: env.KAFKA_BROKERS.split(","),
  clientId: "resolver-worker",
  // Its own principal (null: the stack runs without SASL), never the tools' admin createKafka falls back to.
  credentials: kafkaCredentials(env, "resolver-worker") ?? null,
  warn: (message, extra) => logger.warn(extra, message),
});
const metrics = createWorkerMetrics();
const dlq = new KafkaEventProducer(kafka);
const consumer = new ResolverConsumer({
  kafka,
  pool,
  dlq,
  logger,
  metrics,
  topic: env.WORKER_TOPIC,
  dlqTopic: env.WORKER_DLQ_TOPIC,
  groupId: env.WORKER_GROUP_ID,
  maxAttempts: env.WORKER_MAX_ATTEMPTS,
  maxRetryMs: env.WORKER_EVENT_MAX_RETRY_MS,
  keyConcurrency: env.WORKER_KEY_CONCURRENCY,
  eventsPerTransaction: env.WORKER_EVENTS_PER_TRANSACTION,
  chunkMinLag: env.WORKER_CHUNK_MIN_LAG,
  backlogEventsPerTransaction: env.WORKER_BACKLOG_EVENTS_PER_TRANSACTION,
  backlogMinLag: env.WORKER_BACKLOG_MIN_LAG,
  partitionConcurrency: env.WORKER_PARTITION_CONCURRENCY,
  combineLingerMs: env.WORKER_COMBINE_LINGER_MS,
  combineMaxEvents: env.WORKER_COMBINE_MAX_EVENTS,
  fetchMinBytes: env.WORKER_FETCH_MIN_BYTES,
  commitIntervalMs: env.WORKER_COMMIT_INTERVAL_MS,
  sessionTimeoutMs: env.WORKER_SESSION_TIMEOUT_MS,
  suppressionSecret: env.ERASURE_HASH_SECRET,
  onFatal: () => void shutdown("consumer crashed", 1),
});

/** Ready: the consumer holds its group assignment and Postgres answers. */
async function readiness(): Promise<{ ok: boolean; kafka: boolean; postgres: boolean }> {
  const postgres = await postgresAnswers(pool);
  return { ok: consumer.ready && postgres, kafka: consumer.ready, postgres };
}

const health = startHealthServer({
  port: env.WORKER_PORT,
  host: env.WORKER_HOST,
  readiness,
  metrics: async () => {
    return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
  },
});

let stopping = false;
async function shutdown(reason: string, code = 0) {
  if (stopping) return;
  stopping = true;
  logger.info({ reason }, "shutting down: finishing the events in flight and committing them");
  await consumer.stop().catch((error) => logger.error({ err: errorMessage(error) }, "consumer stop failed"));
  await dlq.close().catch(() => {});
  await pool.end().catch(() => {});
  health.close();
  process.exit(code);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));

await consumer.start();
logger.info({ group: env.WORKER_GROUP_ID, topic: env.WORKER_TOPIC }, "resolver-worker consuming");
