import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import { deploymentKey } from "@crm/automations";
import { parseEnv } from "@crm/config";
import { assertCannotBypassRls, createPool } from "@crm/db";
import { createKafka, KafkaEventProducer, kafkaCredentials } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { SchemaRegistryClient } from "@crm/schema-registry";
import { serve } from "@hono/node-server";
import { type AppDeps, createApp } from "./app.ts";
import { IngestEnv } from "./env.ts";
import { PgIdempotencyStore, pruneIdempotencyKeys } from "./idempotency.ts";
import { createMetrics } from "./metrics.ts";
import { AuthFailureLimiter, InstanceRegistry, RateLimiter } from "./rate-limit.ts";
import { RawEventEncoder } from "./raw-event-encoder.ts";
import { PgRejectedEventStore, pruneRejectedEvents } from "./rejected-events.ts";
import { createSegmentApp } from "./segment-app.ts";
import { limitConnections, type ServerLimits, serverOptions } from "./server-limits.ts";
import { PgTenantDirectory } from "./tenant-directory.ts";

const env = parseEnv(IngestEnv);
const logger = createLogger("ingest-api");
const pool = createPool({ connectionString: env.DATABASE_URL, applicationName: "ingest-api", max: 10 });
// Tenant checks and idempotency records rely on RLS: a role that could bypass it must not serve.
await assertCannotBypassRls(pool);
const kafka = createKafka({
  brokers: env.KAFKA_BROKERS.split(","),
  clientId: "ingest-api",
  // Its own principal (null: the stack runs without SASL), never the tools' admin createKafka falls back to.
  credentials: kafkaCredentials(env, "ingest-api") ?? null,
  warn: (message, extra) => logger.warn(extra, message),
});
const producer = new KafkaEventProducer(kafka, {
  sendTimeoutMs: env.KAFKA_SEND_TIMEOUT_MS,
  lingerMs: env.KAFKA_LINGER_MS,
});
const instances = new InstanceRegistry(pool, randomUUID(), env.INGEST_INSTANCE_GROUP, 5_000, (error) =>
  logger.warn({ err: error }, "instance heartbeat failed; keeping the last instance count"),
);
const encoder = new RawEventEncoder(
  env.SCHEMA_REGISTRY_URL
    ? new SchemaRegistryClient(env.SCHEMA_REGISTRY_URL, { timeoutMs: 3_000 })
    : undefined,
  (error) =>
    logger.warn({ err: error }, "schema registry unavailable; producing unframed JSON until it answers"),
);
let shuttingDown = false;
const metrics = createMetrics();
pool.on("acquire", () => metrics.databaseCheckouts.inc());

// One set of dependencies for both listeners: the same producer, idempotency records, rate-limit buckets,
// per-address auth failures and metrics.
const idempotency = new PgIdempotencyStore(pool, env.KAFKA_SEND_TIMEOUT_MS + 10_000);
const deps: AppDeps = {
  producer,
  directory: new PgTenantDirectory(pool, 30_000, { unknownKeyTtlMs: env.INGEST_KEY_UNKNOWN_CACHE_MS }),
  idempotency,
  jwt: {
    secret: env.JWT_SECRET,
    audience: env.JWT_AUDIENCE,
    issuer: env.JWT_ISSUER,
    jwksUrl: env.JWKS_URL,
    algorithms: env.JWT_ALGORITHMS,
    maxLifetimeSeconds: env.JWT_MAX_LIFETIME_S,
    clockSkewSeconds: env.JWT_CLOCK_SKEW_S,
  },
  logger,
  logHashSecret: env.LOG_HASH_SECRET,
  encodeRawEvent: encoder.encode,
  rawTopic: env.INGEST_TOPIC,
  limits: {
    userPerSecond: env.RATE_LIMIT_USER_PER_SEC,
    keyPerSecond: (plan) => env.RATE_LIMIT_PLANS[plan] ?? env.RATE_LIMIT_KEY_DEFAULT_PER_SEC,
  },
  limiter: new RateLimiter(instances.share),
  metrics,
  ...(env.RATE_LIMIT_ADDRESS_AUTH_FAILURES_PER_SEC > 0
    ? {
        authFailures: new AuthFailureLimiter({
          ratePerSecond: env.RATE_LIMIT_ADDRESS_AUTH_FAILURES_PER_SEC,
          burst: env.RATE_LIMIT_ADDRESS_AUTH_FAILURE_BURST,
        }),
      }
    : {}),
  trustedProxyHops: env.INGEST_TRUSTED_PROXY_HOPS,
  bodyTimeoutMs: env.INGEST_BODY_TIMEOUT_MS,
  readinessChecks: { postgres: () => pool.query("SELECT 1") },
  db: pool,
  erasureHashSecret: env.ERASURE_HASH_SECRET,
  ...(env.AUTOMATIONS_SECRET_KEY ? { automationsSecretKey: deploymentKey(env.AUTOMATIONS_SECRET_KEY) } : {}),
  isShuttingDown: () => shuttingDown,
};
const app = createApp(deps);
const segmentApp = createSegmentApp({ ...deps, rejected: new PgRejectedEventStore(pool) });

await Promise.all([instances.start(), encoder.start()]);
const serverLimits: ServerLimits = {
  headersTimeoutMs: env.INGEST_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: env.INGEST_REQUEST_TIMEOUT_MS,
  keepAliveTimeoutMs: env.INGEST_KEEP_ALIVE_TIMEOUT_MS,
  maxConnections: env.INGEST_MAX_CONNECTIONS,
};
const server = serve(
  {
    fetch: app.fetch,
    port: env.INGEST_PORT,
    hostname: env.INGEST_HOST,
    serverOptions: serverOptions(serverLimits),
  },
  (info) => logger.info({ port: info.port }, "ingest-api listening"),
);
limitConnections(server as Server, serverLimits, metrics.connectionsRefused);
// The Segment-compatible listener: same process, same limits, its own port (analytics-node drops a path prefix).
const segmentServer =
  env.SEGMENT_PORT > 0
    ? serve(
        {
          fetch: segmentApp.fetch,
          port: env.SEGMENT_PORT,
          hostname: env.INGEST_HOST,
          serverOptions: serverOptions(serverLimits),
        },
        (info) => logger.info({ port: info.port }, "segment-compatible listener listening"),
      )
    : undefined;
if (segmentServer) limitConnections(segmentServer as Server, serverLimits, metrics.connectionsRefused);

// Records older than the retention are pruned hourly (and once at start), by whichever instance gets there.
const prune = () =>
  pruneIdempotencyKeys(pool, env.IDEMPOTENCY_RETENTION_HOURS).then(
    (pruned) => pruned > 0 && logger.info({ pruned }, "idempotency records pruned"),
    (error) => logger.warn({ err: error }, "idempotency pruning failed"),
  );
const pruneRejected = () =>
  pruneRejectedEvents(pool, env.REJECTED_EVENTS_RETENTION_DAYS).then(
    (pruned) => pruned > 0 && logger.info({ pruned }, "rejected events pruned"),
    (error) => logger.warn({ err: error }, "rejected events pruning failed"),
  );
void prune();
void pruneRejected();
setInterval(() => {
  void prune();
  void pruneRejected();
}, 60 * 60_000).unref();

async function shutdown(signal: string) {
  if (shuttingDown) return;
  shuttingDown = true;
  logger.info({ signal }, "shutting down: draining in-flight requests");
  const deadline = setTimeout(() => {
    logger.warn(
      { grace_ms: env.SHUTDOWN_GRACE_MS },
      "requests still in flight after the grace period; exiting",
    );
    process.exit(1);
  }, env.SHUTDOWN_GRACE_MS);
  deadline.unref();
  // close() stops accepting and resolves when in-flight requests have finished; idle keep-alive sockets would
  // otherwise hold it open.
  const servers = [server, ...(segmentServer ? [segmentServer] : [])];
  const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
  for (const s of servers) (s as { closeIdleConnections?: () => void }).closeIdleConnections?.();
  await Promise.all(closed);
  encoder.stop();
  await instances.stop();
  await producer.close().catch(() => {});
  // Completions of answered requests go to Postgres after their answers: they are written before the pool closes.
  await idempotency.drain();
  await pool.end().catch(() => {});
  logger.info("ingest-api stopped");
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));
