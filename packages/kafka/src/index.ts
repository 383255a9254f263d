import "./quiet-negative-timeouts.ts";
import { stackEnv } from "@crm/config";
import { DependencyUnavailableError } from "@crm/errors";
import kafkajs, {
  type Admin,
  type Consumer,
  type IHeaders,
  Kafka,
  logLevel,
  type Producer,
  type ProducerBatch,
} from "kafkajs";

import { FastDefaultPartitioner } from "./partitioner.ts";

export type { Admin, Consumer, EachBatchPayload, KafkaMessage } from "kafkajs";
export * from "./framing.ts";
export * from "./ordered-commits.ts";
// kafkajs is CommonJS and Node cannot see these through a named import.
export const { AclOperationTypes, AclPermissionTypes, AclResourceTypes, ResourcePatternTypes } = kafkajs;
const { ConfigResourceTypes, ConfigSource } = kafkajs;

export * from "./partitioner.ts";

/** Topic names of SPEC section 5. */
export const TOPICS = {
  raw: "events.raw.v1",
  dlq: "events.dlq.v1",
  contactUpdated: "contact.updated.v1",
  /** Every event the worker stored (its crm_events row), streamed by Debezium: the segments' and automations' trigger. */
  eventsApplied: "events.applied.v1",
  /** Segment entries and exits, from the segments service's outbox via Debezium (SPEC section 11). */
  segmentMembership: "segment.membership.v1",
} as const;

export interface OutgoingMessage {
  key: string;
  value: Buffer | string;
  headers?: IHeaders;
}

/** What the API needs from a broker: durable, acknowledged sends. Kept small so kafkajs can be replaced. */
export interface EventProducer {
  /** Resolves only once every message is acknowledged by all in-sync replicas (acks=all). */
  send(topic: string, messages: OutgoingMessage[]): Promise<void>;
  /** Rejects when the broker cannot be reached within a short bound (readiness probes). */
  checkReady?(): Promise<void>;
  close(): Promise<void>;
}

type WarnLog = (message: string, extra: Record<string, unknown>) => void;

/** A Kafka principal's SCRAM-SHA-512 credentials (SPEC section 11, "Kafka principals"). */
export interface KafkaCredentials {
  username: string;
  password: string;
}

/**
 * The principals the stack creates, by the prefix of their `.stack/env` variables: `KAFKA_<PREFIX>_USERNAME` and
 * `KAFKA_<PREFIX>_PASSWORD`. Each service reads only its own; `admin` is for tools and tests.
 */
export const KAFKA_PRINCIPALS = {
  admin: "ADMIN",
  "ingest-api": "INGEST_API",
  "resolver-worker": "RESOLVER_WORKER",
  connect: "CONNECT",
  consumer: "CONSUMER",
  segments: "SEGMENTS",
  automations: "AUTOMATIONS",
  console: "CONSOLE",
} as const;
export type KafkaPrincipal = keyof typeof KAFKA_PRINCIPALS;

/** A principal's credentials from an environment, or undefined when the stack runs without authentication. */
export function kafkaCredentials(
  env: Record<string, unknown>,
  principal: KafkaPrincipal,
): KafkaCredentials | undefined {
  const prefix = `KAFKA_${KAFKA_PRINCIPALS[principal]}`;
  const username = env[`${prefix}_USERNAME`];
  const password = env[`${prefix}_PASSWORD`];
  return typeof username === "string" && username && typeof password === "string" && password
    ? { username, password }
    : undefined;
}

/**
 * A kafkajs client whose own logging goes to `warn` (kafkajs prints to stdout otherwise). `credentials`: the
 * principal it authenticates as; services pass their own, null for no authentication. Left out, a tool or test
 * authenticates as the stack's admin principal from `.stack/env` (none when the stack runs without authentication).
 */
export function createKafka(options: {
  brokers: string[];
  clientId: string;
  credentials?: KafkaCredentials | null;
  warn?: WarnLog;
}): Kafka {
  const warn = options.warn ?? (() => {});
  const credentials =
    options.credentials === undefined ? kafkaCredentials(stackEnv(), "admin") : options.credentials;
  return new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    ...(credentials ? { sasl: { mechanism: "scram-sha-512" as const, ...credentials } } : {}),
    connectionTimeout: 3_000,
    requestTimeout: 10_000,
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 2_000 },
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ namespace, log }) => {
        const { message, ...extra } = log;
        warn(`kafkajs ${namespace}: ${message}`, extra);
      },
  });
}

interface Pending {
  topic: string;
  messages: OutgoingMessage[];
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * An idempotent, acks=all producer that coalesces concurrent sends: kafkajs sends every `send()` as its own
 * request, so while one request is in flight, later calls queue and go out together in the next `sendBatch`;
 * with `lingerMs`, a send that finds it idle also waits that long for company (fewer requests at moderate rates).
 * A send that cannot be acknowledged within `sendTimeoutMs` rejects with DependencyUnavailableError, so callers
 * answer 503 instead of hanging.
 */
export class KafkaEventProducer implements EventProducer {
  private producer: Producer;
  private connected: Promise<void> | undefined;
  private admin: Admin | undefined;
  private adminConnected: Promise<void> | undefined;
  private queue: Pending[] = [];
  private inFlight = false;
  private linger: NodeJS.Timeout | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly options: {
      sendTimeoutMs?: number;
      maxBatchMessages?: number;
      /**
       * A send that finds the producer idle waits this long for others to join its request (0: goes at once).
       * Sends queued behind a request in flight go together as soon as it is acknowledged, whatever this is.
       */
      lingerMs?: number;
    } = {},
  ) {
    this.producer = this.newProducer();
  }

  private newProducer(): Producer {
    return this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: FastDefaultPartitioner,
      retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1_000 },
    });
  }

  async checkReady(): Promise<void> {
    try {
      this.admin ??= this.kafka.admin();
      const admin = this.admin;
      this.adminConnected ??= admin.connect().catch((error) => {
        this.adminConnected = undefined;
        throw error;
      });
      await withTimeout(
        this.adminConnected.then(() => admin.describeCluster()),
        this.options.sendTimeoutMs ?? 5_000,
      );
    } catch (error) {
      throw new DependencyUnavailableError("kafka", "kafka is not reachable", { cause: error });
    }
  }

  /** Messages queued; asked only while idle, when the queue holds the sends of one linger (a request's worth). */
  private queuedMessages(): number {
    return this.queue.reduce((sum, p) => sum + p.messages.length, 0);
  }

  /**
   * Drops the producer after a failed or timed-out send: disconnecting aborts whatever kafkajs still retries in
   * the background (so nothing is acknowledged later for a request already answered 503), and the next send
   * starts from a fresh connection and producer id.
   */
  private resetProducer(): void {
    const old = this.producer;
    this.producer = this.newProducer();
    this.connected = undefined;
    // Not awaited: against a hung broker the disconnect itself may hang, and the queue must keep moving.
    void old.disconnect().catch(() => {});
  }

  send(topic: string, messages: OutgoingMessage[]): Promise<void> {
    const timeoutMs = this.options.sendTimeoutMs ?? 5_000;
    return new Promise<void>((resolve, reject) => {
      // The bound runs from the call, not from when its batch leaves: a send queued behind a hung batch still
      // answers within timeoutMs.
      const timer = setTimeout(() => {
        this.queue = this.queue.filter((p) => p !== pending);
        reject(
          new DependencyUnavailableError("kafka", "kafka did not acknowledge the send", {
            cause: new Error(`timed out after ${timeoutMs} ms`),
          }),
        );
      }, timeoutMs);
      const pending: Pending = {
        topic,
        messages,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.queue.push(pending);
      const lingerMs = this.options.lingerMs ?? 0;
      if (
        lingerMs <= 0 ||
        this.inFlight ||
        this.queuedMessages() >= (this.options.maxBatchMessages ?? 5_000)
      ) {
        void this.flush();
      } else {
        this.linger ??= setTimeout(() => {
          this.linger = undefined;
          void this.flush();
        }, lingerMs);
      }
    });
  }

  private async ensureConnected(): Promise<void> {
    this.connected ??= this.producer.connect().catch((error) => {
      this.connected = undefined;
      throw error;
    });
    return this.connected;
  }

  private async flush(): Promise<void> {
    if (this.inFlight || this.queue.length === 0) return;
    this.inFlight = true;
    const max = this.options.maxBatchMessages ?? 5_000;
    const batch: Pending[] = [];
    let count = 0;
    clearTimeout(this.linger);
    this.linger = undefined;
    while (this.queue.length > 0 && (batch.length === 0 || count + this.queue[0]!.messages.length <= max)) {
      const next = this.queue.shift()!;
      batch.push(next);
      count += next.messages.length;
    }
    try {
      await withTimeout(this.sendNow(batch), this.options.sendTimeoutMs ?? 5_000);
      for (const pending of batch) pending.resolve();
    } catch (error) {
      const unavailable = new DependencyUnavailableError("kafka", "kafka did not acknowledge the send", {
        cause: error,
      });
      for (const pending of batch) pending.reject(unavailable);
      this.resetProducer();
    } finally {
      this.inFlight = false;
      void this.flush();
    }
  }

  private async sendNow(batch: Pending[]): Promise<void> {
    await this.ensureConnected();
    const byTopic = new Map<string, OutgoingMessage[]>();
    for (const pending of batch) {
      const list = byTopic.get(pending.topic) ?? [];
      list.push(...pending.messages);
      byTopic.set(pending.topic, list);
    }
    const request: ProducerBatch = {
      acks: -1,
      topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
    };
    await this.producer.sendBatch(request);
  }

  async close(): Promise<void> {
    await Promise.all([this.producer.disconnect(), this.admin?.disconnect()]);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface TopicSpec {
  topic: string;
  numPartitions: number;
  replicationFactor?: number;
  configEntries?: { name: string; value: string }[];
}

/** Creates the topics that do not exist yet; existing ones are left as they are. */
export async function ensureTopics(admin: Admin, specs: TopicSpec[]): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((spec) => !existing.has(spec.topic));
  if (missing.length > 0) {
    await admin.createTopics({
      waitForLeaders: true,
      topics: missing.map((spec) => ({ replicationFactor: 1, ...spec })),
    });
  }
  return missing.map((spec) => spec.topic);
}

/** Retention of the topics that hold events as received, PII included (issue 18): 7 days unless configured. */
export const DEFAULT_EVENT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * Topics whose messages carry identifiers and props as sent (events.applied.v1: each applied event's props): an
 * erased person's events stay in them until their retention deletes them (the worker's suppression list keeps a
 * replay from applying them meanwhile).
 */
export const RETAINED_TOPICS: readonly string[] = [TOPICS.raw, TOPICS.dlq, TOPICS.eventsApplied];

/**
 * The topics of SPEC section 5 with the given partition count and replication factor (3 on a cluster, whose
 * brokers set `min.insync.replicas=2`, so an acks=all write survives the loss of any one broker); RETAINED_TOPICS
 * get `retention.ms` = `eventRetentionMs`.
 */
export function pipelineTopics(
  partitions: number,
  replicationFactor = 1,
  eventRetentionMs = DEFAULT_EVENT_RETENTION_MS,
): TopicSpec[] {
  return [TOPICS.raw, TOPICS.dlq, TOPICS.contactUpdated, TOPICS.eventsApplied, TOPICS.segmentMembership].map(
    (topic) => ({
      topic,
      numPartitions: partitions,
      replicationFactor,
      ...(RETAINED_TOPICS.includes(topic)
        ? { configEntries: [{ name: "retention.ms", value: String(Math.round(eventRetentionMs)) }] }
        : {}),
    }),
  );
}

/**
 * Gives existing topics the `configEntries` of their spec where they differ (ensureTopics sets them only on
 * creation), e.g. a retention changed in the settings. The topic's other topic-level settings are sent along
 * unchanged (AlterConfigs replaces a topic's whole set). Returns the topics altered.
 */
export async function alignTopicConfigs(admin: Admin, specs: TopicSpec[]): Promise<string[]> {
  const wanted = specs.filter((spec) => (spec.configEntries?.length ?? 0) > 0);
  if (wanted.length === 0) return [];
  const existing = new Set(await admin.listTopics());
  const present = wanted.filter((spec) => existing.has(spec.topic));
  if (present.length === 0) return [];
  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: present.map((spec) => ({ type: ConfigResourceTypes.TOPIC, name: spec.topic })),
  });
  const altered: { type: number; name: string; configEntries: { name: string; value: string }[] }[] = [];
  for (const spec of present) {
    const resource = described.resources.find((r) => r.resourceName === spec.topic);
    const own = new Map(
      (resource?.configEntries ?? [])
        .filter((entry) => entry.configSource === ConfigSource.TOPIC_CONFIG && entry.configValue !== null)
        .map((entry) => [entry.configName, entry.configValue]),
    );
    if (spec.configEntries!.every((entry) => own.get(entry.name) === entry.value)) continue;
    for (const entry of spec.configEntries!) own.set(entry.name, entry.value);
    altered.push({
      type: ConfigResourceTypes.TOPIC,
      name: spec.topic,
      configEntries: [...own].map(([name, value]) => ({ name, value })),
    });
  }
  if (altered.length > 0) await admin.alterConfigs({ validateOnly: false, resources: altered });
  return altered.map((resource) => resource.name);
}

/** Reads header values as strings (kafkajs hands them out as Buffers). */
export function headerString(headers: IHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  if (value === undefined) return undefined;
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? undefined : first.toString();
}

export type { Consumer as KafkaConsumer };
export { Kafka };
