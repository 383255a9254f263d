import { deploymentKey } from "@crm/automations";
import { parseEnv } from "@crm/config";
import { assertCannotBypassRls, createPool, postgresAnswers } from "@crm/db";
import { errorMessage } from "@crm/errors";
import { createKafka, kafkaCredentials } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { startHealthServer } from "@crm/process";
import { TriggerConsumer } from "./consumer.ts";
import { DeliveryLoop } from "./delivery-loop.ts";
import { AutomationsEnv } from "./env.ts";
import { createAutomationsMetrics } from "./metrics.ts";

const env = parseEnv(AutomationsEnv);
const logger = createLogger("automations");
const pool = createPool({
  connectionString: env.DATABASE_URL,
  applicationName: "automations",
  max: env.DATABASE_POOL_SIZE,
});
await assertCannotBypassRls(pool);
if (env.AUTOMATIONS_ALLOW_PRIVATE_TARGETS) {
  logger.warn("AUTOMATIONS_ALLOW_PRIVATE_TARGETS is on: webhooks may reach loopback and private addresses");
}

const kafka = createKafka({
  brokers: env.KAFKA_BROKERS.split(","),
  clientId: "automations",
  credentials: kafkaCredentials(env, "automations") ?? null,
  warn: (message, extra) => logger.warn(extra, message),
});
const metrics = createAutomationsMetrics();
const delivery = new DeliveryLoop({
  pool,
  logger,
  metrics,
  secretKey: deploymentKey(env.AUTOMATIONS_SECRET_KEY),
  queue: env.AUTOMATIONS_GROUP_ID,
  send: {
    timeoutMs: env.AUTOMATIONS_TIMEOUT_MS,
    maxResponseBytes: env.AUTOMATIONS_MAX_RESPONSE_BYTES,
    allowPrivate: env.AUTOMATIONS_ALLOW_PRIVATE_TARGETS,
  },
  schedule: env.AUTOMATIONS_RETRY_SCHEDULE_MS,
  jitter: env.AUTOMATIONS_RETRY_JITTER,
  disableAfterMs: env.AUTOMATIONS_DISABLE_AFTER_MS,
  perEndpoint: env.AUTOMATIONS_ENDPOINT_CONCURRENCY,
  maxInFlight: env.AUTOMATIONS_MAX_IN_FLIGHT,
  pollMs: env.AUTOMATIONS_POLL_MS,
});
const consumer = new TriggerConsumer({
  kafka,
  pool,
  logger,
  metrics,
  groupId: env.AUTOMATIONS_GROUP_ID,
  queue: env.AUTOMATIONS_GROUP_ID,
  topics: {
    contact: env.AUTOMATIONS_CONTACT_TOPIC,
    membership: env.AUTOMATIONS_MEMBERSHIP_TOPIC,
    events: env.AUTOMATIONS_EVENTS_TOPIC,
  },
  fromBeginning: env.AUTOMATIONS_FROM_BEGINNING,
  sessionTimeoutMs: env.AUTOMATIONS_SESSION_TIMEOUT_MS,
  onDue: () => delivery.wake(),
  onFatal: () => void shutdown("consumer crashed", 1),
});

/** The queue's gauges, across businesses (a definer function), refreshed when /metrics is read. */
async function refreshGauges(): Promise<void> {
  const { rows } = await pool.query(
    "SELECT pending, oldest_due_seconds, disabled_endpoints FROM app.automation_queue_stats()",
  );
  metrics.pending.set(Number(rows[0].pending));
  metrics.queueAgeSeconds.set(Number(rows[0].oldest_due_seconds));
  metrics.disabledEndpoints.set(Number(rows[0].disabled_endpoints));
}

async function readiness() {
  const postgres = await postgresAnswers(pool);
  return { ok: consumer.ready && postgres, kafka: consumer.ready, postgres, delivery: delivery.healthy };
}

const health = startHealthServer({
  port: env.AUTOMATIONS_PORT,
  host: env.AUTOMATIONS_HOST,
  readiness,
  metrics: async () => {
    await refreshGauges().catch(() => {});
    return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
  },
});

let stopping = false;
async function shutdown(reason: string, code = 0) {
  if (stopping) return;
  stopping = true;
  logger.info({ reason }, "shutting down: finishing the attempts in flight");
  await consumer.stop().catch((error) => logger.error({ err: errorMessage(error) }, "consumer stop failed"));
  await delivery.stop().catch((error) => logger.error({ err: errorMessage(error) }, "delivery stop failed"));
  await pool.end().catch(() => {});
  health.close();
  process.exit(code);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));

delivery.start();
await consumer.start();
logger.info({ group: env.AUTOMATIONS_GROUP_ID }, "automations consuming and delivering");
