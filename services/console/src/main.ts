import { createAuthenticator, PgTenantDirectory } from "@crm/auth";
import { parseEnv } from "@crm/config";
import { assertCannotBypassRls, createPool } from "@crm/db";
import { createKafka, kafkaCredentials, TOPICS } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { serve } from "@hono/node-server";
import { createApp } from "./app.ts";
import { DeadLetterLog } from "./dead-letters.ts";
import { ConsoleEnv } from "./env.ts";
import { RateSampler } from "./rates.ts";
import { Sessions } from "./session.ts";

const env = parseEnv(ConsoleEnv);
const logger = createLogger("console", { level: env.LOG_LEVEL });
const db = createPool({ connectionString: env.CONSOLE_DATABASE_URL, applicationName: "console", max: 4 });
// Contact cards are read under RLS in their business's transaction: a role that could bypass it must not serve.
await assertCannotBypassRls(db);

const kafka = createKafka({
  brokers: env.KAFKA_BROKERS.split(","),
  clientId: "console",
  credentials: kafkaCredentials(env, "console") ?? null,
  warn: (message, extra) => logger.warn(extra, message),
});
const replays = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await replays.connect();
const directory = new PgTenantDirectory(db);
const deadLetters = new DeadLetterLog({ kafka, topic: env.CONSOLE_DLQ_TOPIC, logger });
const rates = new RateSampler({
  kafka,
  ingestUrl: env.INGEST_URL,
  workerUrl: env.WORKER_URL,
  publishedTopic: TOPICS.contactUpdated,
  intervalMs: env.CONSOLE_SAMPLE_MS,
});

const app = createApp({
  db,
  directory,
  authenticator: createAuthenticator({
    jwt: {
      secret: env.JWT_SECRET,
      audience: env.JWT_AUDIENCE,
      issuer: env.JWT_ISSUER,
      jwksUrl: env.JWKS_URL,
    },
    directory,
  }),
  sessions: new Sessions(env.CONSOLE_SESSION_SECRET, env.CONSOLE_SESSION_TTL_S),
  operatorToken: env.CONSOLE_OPERATOR_TOKEN,
  operatorClaim: env.CONSOLE_OPERATOR_CLAIM,
  kafka,
  replays,
  deadLetters,
  rates,
  rawTopic: env.CONSOLE_RAW_TOPIC,
  dlqTopic: env.CONSOLE_DLQ_TOPIC,
  topics: env.CONSOLE_TOPICS,
  connect: {
    url: env.CONNECT_URL,
    username: env.CONNECT_USERNAME,
    password: env.CONNECT_PASSWORD,
    name: env.CONSOLE_CONNECTOR_NAME,
  },
  slotName: env.CONSOLE_SLOT_NAME,
  lagGroups: env.CONSOLE_LAG_GROUPS,
  services: [
    { name: "ingest-api", url: env.INGEST_URL },
    { name: "resolver-worker", url: env.WORKER_URL },
    { name: "segments", url: env.SEGMENTS_URL },
    { name: "automations", url: env.AUTOMATIONS_URL },
  ],
  logger,
});

await deadLetters.start();
rates.start();

const server = serve({ fetch: app.fetch, port: env.CONSOLE_PORT, hostname: env.CONSOLE_HOST }, (info) =>
  logger.info({ port: info.port }, "console listening"),
);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "console stopping");
  server.close();
  await Promise.allSettled([deadLetters.stop(), rates.stop(), replays.disconnect()]);
  await db.end().catch(() => {});
  process.exit(0);
}
process.on("SIGINT", () => void shutdown("SIGINT"));
process.on("SIGTERM", () => void shutdown("SIGTERM"));
