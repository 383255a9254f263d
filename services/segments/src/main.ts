import { parseEnv } from "@crm/config";
import { assertCannotBypassRls, createPool, postgresAnswers } from "@crm/db";
import { errorMessage } from "@crm/errors";
import { createKafka, kafkaCredentials } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { startHealthServer } from "@crm/process";
import { TriggerConsumer } from "./consumer.ts";
import { SegmentsEnv } from "./env.ts";
import { JobRunner } from "./jobs.ts";
import { createSegmentsMetrics } from "./metrics.ts";
import { reevaluateContacts } from "./reevaluate.ts";
import { SegmentCache } from "./segment-cache.ts";
import { Sweeper } from "./sweep.ts";

const env = parseEnv(SegmentsEnv);
const logger = createLogger("segments");
const pool = createPool({
  connectionString: env.DATABASE_URL,
  applicationName: "segments",
  max: env.DATABASE_POOL_SIZE,
  // The service's statements are named and re-run with new contacts: planned once per connection instead of at
  // every run (a 50-segment statement plans in 8-23 ms). Their plans are built not to depend on the values
  // (contacts by primary key, events by contact, memberships by a fenced key probe).
  settings: { plan_cache_mode: "force_generic_plan" },
});
await assertCannotBypassRls(pool);

const metrics = createSegmentsMetrics();
const onTiming = (tag: string, ms: number) => metrics.transactionSeconds.observe({ tag }, ms / 1_000);
const cache = new SegmentCache();
const reevaluate = async (businessId: string, triggers: Parameters<typeof reevaluateContacts>[2]) => {
  const outcome = await reevaluateContacts({ pool, cache, onTiming }, businessId, triggers);
  const cause = triggers[0]?.cause.cause ?? "event";
  metrics.evaluations.inc({ cause }, outcome.evaluated);
  if (outcome.entered) metrics.changes.inc({ change: "entered" }, outcome.entered);
  if (outcome.exited) metrics.changes.inc({ change: "exited" }, outcome.exited);
  return outcome;
};

const kafka = createKafka({
  brokers: env.KAFKA_BROKERS.split(","),
  clientId: "segments",
  // Its own principal (null: the stack runs without SASL), never the tools' admin createKafka falls back to.
  credentials: kafkaCredentials(env, "segments") ?? null,
  warn: (message, extra) => logger.warn(extra, message),
});
const consumer = new TriggerConsumer({
  kafka,
  logger,
  metrics,
  groupId: env.SEGMENTS_GROUP_ID,
  topics: { contacts: env.SEGMENTS_CONTACTS_TOPIC, events: env.SEGMENTS_EVENTS_TOPIC },
  chunk: env.SEGMENTS_CHUNK,
  partitionConcurrency: env.SEGMENTS_PARTITION_CONCURRENCY,
  maxPending: env.SEGMENTS_MAX_PENDING,
  lingerMs: env.SEGMENTS_LINGER_MS,
  evaluationConcurrency: env.SEGMENTS_EVALUATION_CONCURRENCY,
  sessionTimeoutMs: env.SEGMENTS_SESSION_TIMEOUT_MS,
  reevaluate,
  onFatal: () => void shutdown("consumer crashed", 1),
});
const jobs = new JobRunner({
  pool,
  cache,
  logger,
  metrics,
  pageSize: env.SEGMENTS_BACKFILL_PAGE,
  pollMs: env.SEGMENTS_DEFINITIONS_POLL_MS,
  onTiming,
});
const sweeper = new Sweeper({
  pool,
  logger,
  metrics,
  intervalMs: env.SEGMENTS_SWEEP_INTERVAL_MS,
  chunk: env.SEGMENTS_CHUNK,
  reevaluate,
});

/** Ready: the consumer holds its group assignment and Postgres answers. */
async function readiness(): Promise<{ ok: boolean; kafka: boolean; postgres: boolean }> {
  const postgres = await postgresAnswers(pool);
  return { ok: consumer.ready && postgres, kafka: consumer.ready, postgres };
}

const health = startHealthServer({
  port: env.SEGMENTS_PORT,
  host: env.SEGMENTS_HOST,
  readiness,
  metrics: async () => {
    return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
  },
});

let stopping = false;
async function shutdown(reason: string, code = 0) {
  if (stopping) return;
  stopping = true;
  logger.info({ reason }, "shutting down: finishing the transactions in flight");
  await Promise.all([
    consumer.stop().catch((error) => logger.error({ err: errorMessage(error) }, "consumer stop failed")),
    jobs.stop(),
    sweeper.stop(),
  ]);
  await pool.end().catch(() => {});
  health.close();
  process.exit(code);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));

jobs.start();
sweeper.start();
await consumer.start();
logger.info(
  { group: env.SEGMENTS_GROUP_ID, sweep_ms: env.SEGMENTS_SWEEP_INTERVAL_MS },
  "segments consuming contact changes and applied events",
);
