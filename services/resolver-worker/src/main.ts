import { createServer } from "node:http";
import { parseEnv } from "@crm/config";
import { assertCannotBypassRls, createPool } from "@crm/db";
import { createKafka, KafkaEventProducer } from "@crm/kafka";
import { createLogger } from "@crm/logger";
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
  groupId: env.WORKER_GROUP_ID,
  maxAttempts: env.WORKER_MAX_ATTEMPTS,
  keyConcurrency: env.WORKER_KEY_CONCURRENCY,
  partitionConcurrency: env.WORKER_PARTITION_CONCURRENCY,
});

const health = createServer(async (req, res) => {
  if (req.url === "/metrics") {
    res.setHeader("content-type", metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  } else if (req.url === "/healthz") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ok: true }));
  } else {
    res.statusCode = 404;
    res.end();
  }
});
health.listen(env.WORKER_PORT, env.WORKER_HOST);

await consumer.start();
logger.info({ group: env.WORKER_GROUP_ID }, "resolver-worker consuming");

async function shutdown(signal: string) {
  logger.info({ signal }, "shutting down: finishing the current batches");
  await consumer.stop().catch((error) => logger.error({ err: error }, "consumer stop failed"));
  await dlq.close().catch(() => {});
  await pool.end().catch(() => {});
  health.close();
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));
