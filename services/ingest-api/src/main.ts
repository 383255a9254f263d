import { parseEnv } from "@crm/config";
import { createPool } from "@crm/db";
import { createKafka, KafkaEventProducer } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { serve } from "@hono/node-server";
import { createApp } from "./app.ts";
import { IngestEnv } from "./env.ts";
import { PgTenantDirectory } from "./tenant-directory.ts";

const env = parseEnv(IngestEnv);
const logger = createLogger("ingest-api");
const pool = createPool({ connectionString: env.DATABASE_URL, applicationName: "ingest-api", max: 10 });
const kafka = createKafka({
  brokers: env.KAFKA_BROKERS.split(","),
  clientId: "ingest-api",
  warn: (message, extra) => logger.warn(extra, message),
});
const producer = new KafkaEventProducer(kafka, { sendTimeoutMs: env.KAFKA_SEND_TIMEOUT_MS });
const app = createApp({
  producer,
  directory: new PgTenantDirectory(pool),
  jwt: { secret: env.JWT_SECRET, audience: env.JWT_AUDIENCE, issuer: env.JWT_ISSUER },
  logger,
  logHashSecret: env.LOG_HASH_SECRET,
});

const server = serve({ fetch: app.fetch, port: env.INGEST_PORT, hostname: env.INGEST_HOST }, (info) =>
  logger.info({ port: info.port }, "ingest-api listening"),
);

async function shutdown(signal: string) {
  logger.info({ signal }, "shutting down: draining in-flight requests");
  // close() stops accepting and resolves when in-flight requests have finished.
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await producer.close().catch(() => {});
  await pool.end().catch(() => {});
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));
