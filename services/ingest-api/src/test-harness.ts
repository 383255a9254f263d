import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { deploymentKey } from "@crm/automations";
import { stackEnv } from "@crm/config";
import { createPool, type Pool } from "@crm/db";
import { createKafka, type EventProducer, type KafkaCredentials, KafkaEventProducer } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { SchemaRegistryClient } from "@crm/schema-registry";
import { testEnv } from "@crm/testing";
import { type AppDeps, createApp } from "./app.ts";
import type { JwtOptions } from "./auth.ts";
import { type IdempotencyStore, PgIdempotencyStore } from "./idempotency.ts";
import { InstanceRegistry, RateLimiter } from "./rate-limit.ts";
import { RawEventEncoder } from "./raw-event-encoder.ts";
import { PgTenantDirectory } from "./tenant-directory.ts";

/** Log lines captured from an in-process API, for "no PII in logs" assertions. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void) {
    this.lines.push(chunk.toString("utf8"));
    done();
  }
  text(): string {
    return this.lines.join("");
  }
}

export interface TestApi {
  app: ReturnType<typeof createApp>;
  pool: Pool;
  producer: EventProducer;
  logs: LogCapture;
  instances: InstanceRegistry;
  encoder: RawEventEncoder;
  close(): Promise<void>;
  /** POST with a bearer credential; returns status, headers and parsed body. */
  post(
    path: string,
    credential: string | undefined,
    body: unknown,
    headers?: Record<string, string>,
    // biome-ignore lint/suspicious/noExplicitAny: tests assert response bodies field by field
  ): Promise<{ status: number; headers: Headers; body: any }>;
}

/**
 * The real app in process, on the real stack (service-role Postgres pool, idempotent Kafka producer), with logs
 * captured. Each API gets its own instance group so rate-limit shares are only those the test sets up.
 */
export async function startTestApi(
  options: {
    brokers?: string[];
    /** The principal for `brokers` (a private broker has its own); default the stack's admin. */
    credentials?: KafkaCredentials;
    jwt?: Partial<JwtOptions>;
    sendTimeoutMs?: number;
    tenantCacheMs?: number;
    instanceGroup?: string;
    limits?: AppDeps["limits"];
    /** Default: PgIdempotencyStore on the harness's pool. */
    idempotency?: IdempotencyStore;
  } = {},
): Promise<TestApi> {
  const env = testEnv();
  const logs = new LogCapture();
  const logger = createLogger("ingest-api-test", { level: "info", destination: logs });
  const pool = createPool({ connectionString: env.databaseUrl, applicationName: "ingest-api-test", max: 5 });
  const kafka = createKafka({
    brokers: options.brokers ?? env.brokers,
    clientId: "ingest-api-test",
    credentials: options.credentials,
  });
  const producer = new KafkaEventProducer(kafka, { sendTimeoutMs: options.sendTimeoutMs ?? 5_000 });
  const instances = new InstanceRegistry(pool, randomUUID(), options.instanceGroup ?? randomUUID(), 1_000);
  await instances.start();
  const encoder = new RawEventEncoder(new SchemaRegistryClient(env.registryUrl));
  await encoder.start();
  const idempotency =
    options.idempotency ?? new PgIdempotencyStore(pool, (options.sendTimeoutMs ?? 5_000) + 5_000);
  const app = createApp({
    producer,
    directory: new PgTenantDirectory(pool, options.tenantCacheMs ?? 30_000),
    idempotency,
    jwt: { secret: env.jwtSecret, audience: "authenticated", ...options.jwt },
    logger,
    logHashSecret: env.logHashSecret,
    encodeRawEvent: encoder.encode,
    ...(options.limits ? { limits: options.limits } : {}),
    limiter: new RateLimiter(instances.share),
    readinessChecks: { postgres: () => pool.query("SELECT 1") },
    db: pool,
    ...(stackEnv().AUTOMATIONS_SECRET_KEY
      ? { automationsSecretKey: deploymentKey(stackEnv().AUTOMATIONS_SECRET_KEY!) }
      : {}),
  });
  return {
    app,
    pool,
    producer,
    logs,
    instances,
    encoder,
    async close() {
      encoder.stop();
      await instances.stop();
      await producer.close().catch(() => {});
      await idempotency.drain();
      await pool.end();
    },
    async post(path, credential, body, headers = {}) {
      const res = await app.request(path, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(credential ? { authorization: `Bearer ${credential}` } : {}),
          ...headers,
        },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {}
      return { status: res.status, headers: res.headers, body: parsed };
    },
  };
}
