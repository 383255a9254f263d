import { randomUUID } from "node:crypto";
import { stackEnv } from "@crm/config";
import { createKafka, decodeFramedJson, headerString, type Kafka } from "@crm/kafka";
import { poll, ServiceProcess } from "@crm/process";
import { SignJWT } from "jose";
import type pg from "pg";

/** Endpoints of the stack the tests run against (.stack/env under the process environment). */
export function testEnv() {
  const env = stackEnv();
  const need = (name: string) => {
    const value = env[name];
    if (!value) throw new Error(`${name} is not set: the vitest globalSetup should have started the stack`);
    return value;
  };
  return {
    databaseUrl: need("DATABASE_URL"),
    adminUrl: need("DATABASE_ADMIN_URL"),
    brokers: need("KAFKA_BROKERS").split(","),
    connectUrl: need("CONNECT_URL"),
    registryUrl: need("SCHEMA_REGISTRY_URL"),
    jwtSecret: need("JWT_SECRET"),
    logHashSecret: need("LOG_HASH_SECRET"),
  };
}

/** A fresh business with its owner (and optionally team members), created as the admin role. */
export async function createBusiness(
  admin: pg.Pool | pg.Client,
  options: { country?: string; team?: string[]; plan?: string } = {},
): Promise<{ businessId: string; ownerId: string }> {
  const businessId = randomUUID();
  const ownerId = randomUUID();
  await admin.query(
    "INSERT INTO businesses (id, name, owner_id, plan, default_country) VALUES ($1, $2, $3, $4, $5)",
    [
      businessId,
      `test ${businessId.slice(0, 8)}`,
      ownerId,
      options.plan ?? "standard",
      options.country ?? "US",
    ],
  );
  for (const userId of options.team ?? []) {
    await admin.query("INSERT INTO business_team (business_id, user_id) VALUES ($1, $2)", [
      businessId,
      userId,
    ]);
  }
  return { businessId, ownerId };
}

/** An HS256 user token as Supabase issues them (`aud: authenticated`). */
export async function signUserToken(
  secret: string,
  userId: string,
  options: { expiresIn?: string; audience?: string } = {},
): Promise<string> {
  return new SignJWT({ role: "authenticated" })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setAudience(options.audience ?? "authenticated")
    .setIssuedAt()
    .setExpirationTime(options.expiresIn ?? "10m")
    .sign(new TextEncoder().encode(secret));
}

/** `poll` with a default bound, as the tests written before it call it; new code calls `poll` from @crm/process. */
export function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  return poll(what, fn, { timeoutMs });
}

export interface ProbedMessage {
  partition: number;
  offset: string;
  key: string | undefined;
  headers: Record<string, string | undefined>;
  value: unknown;
  /** When this process received it (Date.now()), for latency figures. */
  receivedAt: number;
}

/**
 * Reads a topic, by default from the end offsets it had when the probe started, so a test sees what it caused and
 * not the topic's history (`fromEnd: false` reads a private test topic whole). Every delivery is kept, duplicates
 * included. Values are parsed as JSON, framed or plain (`decodeFramedJson`); anything else is kept as text.
 */
export class TopicProbe {
  readonly messages: ProbedMessage[] = [];
  private readonly kafka: Kafka;
  private consumer: ReturnType<Kafka["consumer"]> | undefined;

  constructor(
    brokers: string[],
    private readonly topic: string,
  ) {
    this.kafka = createKafka({ brokers, clientId: "test-probe" });
  }

  async start(options: { fromEnd?: boolean } = {}): Promise<this> {
    const admin = this.kafka.admin();
    await admin.connect();
    const offsets = await admin.fetchTopicOffsets(this.topic);
    await admin.disconnect();
    const consumer = this.kafka.consumer({ groupId: `test-probe-${randomUUID()}`, maxWaitTimeInMs: 50 });
    this.consumer = consumer;
    await consumer.connect();
    await consumer.subscribe({ topic: this.topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const headers: Record<string, string | undefined> = {};
        for (const name of Object.keys(message.headers ?? {}))
          headers[name] = headerString(message.headers, name);
        let value: unknown = null;
        if (message.value) {
          try {
            value = decodeFramedJson(message.value).value;
          } catch {
            value = message.value.toString("utf8");
          }
        }
        this.messages.push({
          partition,
          offset: message.offset,
          key: message.key?.toString(),
          headers,
          value,
          receivedAt: Date.now(),
        });
      },
    });
    if (options.fromEnd ?? true) {
      for (const { partition, offset } of offsets) consumer.seek({ topic: this.topic, partition, offset });
    }
    return this;
  }

  /** The messages whose `business_id` header is `businessId` (as the outbox router sets it). */
  forBusiness(businessId: string): ProbedMessage[] {
    return this.messages.filter((m) => m.headers.business_id === businessId);
  }

  /** Waits until `predicate` matches `count` messages, and returns them. */
  async waitFor(
    predicate: (m: ProbedMessage) => boolean,
    count = 1,
    timeoutMs = 30_000,
  ): Promise<ProbedMessage[]> {
    return eventually(
      `${count} message(s) on ${this.topic}`,
      async () => {
        const found = this.messages.filter(predicate);
        return found.length >= count ? found : undefined;
      },
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect();
  }
}

/** A service a test started: `url`, `output()` (everything it wrote), `stop(signal)` resolving with its exit code. */
export type RunningService = ServiceProcess;

/**
 * Starts a service's real entry point (`src/main.ts`) as a child process with `env` over the stack environment,
 * and waits until `healthUrl` answers. Output is kept for assertions (e.g. that logs hold no PII).
 */
export async function startService(options: {
  entry: string;
  env: Record<string, string>;
  healthUrl: string;
  timeoutMs?: number;
}): Promise<RunningService> {
  const service = new ServiceProcess({
    name: options.entry.split("/").at(-3) ?? options.entry,
    entry: options.entry,
    // SEGMENT_PORT 0: an ingest-api of a test has no Segment listener unless the test gives it a port (several
    // run at once, and `npm start` may hold the stack's).
    env: { LOG_LEVEL: "info", SEGMENT_PORT: "0", ...options.env },
    healthUrl: options.healthUrl,
    output: "capture",
  });
  await service.start(options.timeoutMs);
  return service;
}

export { freePort } from "@crm/process";

/**
 * A new consumer group whose committed offsets are the topic's current end: a worker started in it applies only
 * what a test sends from now on, not the backlog other tests left on a shared topic.
 */
export async function consumerGroupAtTopicEnd(
  brokers: string[],
  topic: string,
  prefix = "test",
): Promise<string> {
  const groupId = `${prefix}-${randomUUID().slice(0, 8)}`;
  await moveGroupToTopicEnd(brokers, topic, groupId);
  return groupId;
}

/** Commits `groupId`'s offsets at `topic`'s current end (the group must have no running member). */
export async function moveGroupToTopicEnd(brokers: string[], topic: string, groupId: string): Promise<void> {
  const admin = createKafka({ brokers, clientId: "test-admin" }).admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(topic);
    await admin.setOffsets({
      groupId,
      topic,
      partitions: ends.map(({ partition, offset }) => ({ partition, offset })),
    });
  } finally {
    await admin.disconnect();
  }
}
