import { isTransientDbError, type Pool } from "@crm/db";
import { DependencyUnavailableError, errorMessage, NonRetriableError } from "@crm/errors";
import type { Consumer, EachBatchPayload, EventProducer, Kafka, KafkaMessage } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { BatchProgress } from "./batch-progress.ts";
import { decodeRawEvent } from "./decode-event.ts";
import type { WorkerMetrics } from "./metrics.ts";
import { redactPii } from "./redact.ts";
import { type ResolveResult, resolveContact, resolveContacts } from "./resolve-contact.ts";

export interface ConsumerOptions {
  kafka: Kafka;
  pool: Pool;
  dlq: EventProducer;
  logger: Logger;
  metrics: WorkerMetrics;
  topic: string;
  dlqTopic: string;
  groupId: string;
  maxAttempts: number;
  keyConcurrency: number;
  /** Events applied in one transaction when they can be (1 = one transaction per event). */
  eventsPerTransaction?: number;
  /**
   * Chunks are used only while a partition is at least this far behind (messages from the batch's first offset to
   * the high watermark): catching up gets chunk throughput, a worker keeping up gets one short transaction per
   * event and its short lock hold (SPEC 7). 0 = always chunk.
   */
  chunkMinLag?: number;
  partitionConcurrency: number;
  commitIntervalMs: number;
  sessionTimeoutMs: number;
  /** Called when the consumer crashed for good (kafkajs will not restart it): the process should exit. */
  onFatal?: (error: Error) => void;
}

/**
 * What happened to one message; exceptions are reserved for infrastructure failures. `abandoned`: the worker is
 * stopping or lost the partition before the message could be applied; it stays uncommitted and is replayed.
 */
type Outcome =
  | { kind: "applied"; result: ResolveResult }
  | { kind: "dlq"; error: Error; attempts: number }
  | { kind: "abandoned" };

/** How a failed attempt should be handled. */
type FailureKind = "unavailable" | "transient" | "permanent";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (attempt: number) => Math.min(2_000, 50 * 2 ** attempt) * (0.5 + Math.random());

function sqlState(error: unknown): string {
  return (error as { code?: string } | null)?.code ?? "";
}

/**
 * unavailable: the database cannot be reached; wait for it and never dead-letter an event for that.
 * permanent: the event itself is bad (contract violation, data exception, constraint other than a race).
 * transient: anything else, including serialization failures, deadlocks and lock timeouts: retry, then DLQ.
 */
export function classifyFailure(error: unknown): FailureKind {
  const code = sqlState(error);
  if (
    error instanceof DependencyUnavailableError ||
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P02", "57P03"].includes(code) ||
    code.startsWith("08") ||
    /Connection terminated|cannot connect|timeout exceeded when trying to connect/i.test(errorMessage(error))
  ) {
    return "unavailable";
  }
  if (error instanceof NonRetriableError) return "permanent";
  if (isTransientDbError(error) || code === "23505" || code === "55P03") return "transient";
  if (code.startsWith("22") || code.startsWith("23") || code === "42501") return "permanent";
  return "transient";
}

function isRebalancing(error: unknown): boolean {
  const type = (error as { type?: string } | null)?.type;
  return (
    type === "REBALANCE_IN_PROGRESS" ||
    type === "ILLEGAL_GENERATION" ||
    type === "UNKNOWN_MEMBER_ID" ||
    type === "NOT_COORDINATOR_FOR_GROUP"
  );
}

/**
 * The next chunk a runner applies: whole key queues (never part of one, so a key stays with one runner and in
 * offset order) until `max` events; a single queue longer than that is taken alone.
 */
export function takeChunk(queues: KafkaMessage[][], max: number): KafkaMessage[] {
  const chunk: KafkaMessage[] = [];
  while (queues.length > 0 && (chunk.length === 0 || chunk.length + queues[0]!.length <= max)) {
    chunk.push(...queues.shift()!);
  }
  return chunk;
}

/** This batch's chunk size: the configured one while the partition lags by `chunkMinLag` or more, else 1. */
export function eventsPerTransaction(
  options: Pick<ConsumerOptions, "eventsPerTransaction" | "chunkMinLag">,
  lag: bigint,
): number {
  const max = Math.max(1, options.eventsPerTransaction ?? 1);
  return lag >= BigInt(options.chunkMinLag ?? 0) ? max : 1;
}

function groupByKey(messages: KafkaMessage[]): KafkaMessage[][] {
  const byKey = new Map<string, KafkaMessage[]>();
  for (const message of messages) {
    const key = message.key?.toString("utf8") ?? "";
    const list = byKey.get(key);
    if (list) list.push(message);
    else byKey.set(key, [message]);
  }
  return [...byKey.values()];
}

/**
 * Consumes raw events: within a partition batch, messages with the same key are applied one by one in offset
 * order while different keys run concurrently; the committed offset only ever advances to the first message not
 * yet applied (or dead-lettered), so a crash, rebalance or shutdown replays instead of losing, and replays are
 * harmless because the resolver dedupes on event id under the event's advisory lock.
 */
export class ResolverConsumer {
  private readonly consumer: Consumer;
  private joined = false;
  private stopping = false;

  constructor(private readonly options: ConsumerOptions) {
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      rebalanceTimeout: 60_000,
      heartbeatInterval: 3_000,
      maxWaitTimeInMs: 100,
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 5_000 },
    });
    const { GROUP_JOIN, REBALANCING, CRASH, STOP } = this.consumer.events;
    this.consumer.on(GROUP_JOIN, () => {
      this.joined = true;
    });
    this.consumer.on(REBALANCING, () => {
      this.joined = false;
    });
    this.consumer.on(STOP, () => {
      this.joined = false;
    });
    this.consumer.on(CRASH, ({ payload }) => {
      this.joined = false;
      options.logger.error(
        { err: redactPii(errorMessage(payload.error)), restart: payload.restart },
        "consumer crashed",
      );
      if (!payload.restart && !this.stopping) options.onFatal?.(payload.error);
    });
  }

  /** True while the consumer holds a group assignment and is not shutting down (for /readyz). */
  get ready(): boolean {
    return this.joined && !this.stopping;
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.options.topic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: this.options.partitionConcurrency,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    // disconnect() stops fetching, waits for the running batches (which finish the events in flight and commit
    // their applied prefix), then leaves the group so the partitions move at once.
    await this.consumer.disconnect();
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, heartbeat, resolveOffset, isRunning, isStale } = payload;
    const { topic, partition, messages } = batch;
    if (messages.length === 0) return;
    const progress = new BatchProgress(messages.map((message) => message.offset));
    let rebalancing = false;
    // The group error that ended the batch early; rethrown at the end so kafkajs rejoins (see below).
    let groupError: unknown;
    let failure: unknown;
    const keepGoing = () => isRunning() && !isStale() && !rebalancing && failure === undefined;

    // Commits never run concurrently for one partition, and only ever move forward.
    let committed: string | undefined;
    let commits = Promise.resolve();
    const commitApplied = () => {
      commits = commits.then(async () => {
        const applied = progress.appliedThrough();
        if (applied === undefined || applied === committed || isStale()) return;
        // resolveOffset moves kafkajs's fetch position; commitOffsets makes it durable for the group.
        resolveOffset(applied);
        const next = (BigInt(applied) + 1n).toString();
        try {
          await this.consumer.commitOffsets([{ topic, partition, offset: next }]);
          committed = applied;
        } catch (error) {
          // Not a correctness problem: what is applied but uncommitted is replayed and deduped.
          if (isRebalancing(error)) {
            rebalancing = true;
            groupError ??= error;
          }
          this.options.logger.warn(
            { topic, partition, offset: next, err: errorMessage(error) },
            "offset commit failed",
          );
        }
      });
      return commits;
    };

    // kafkajs has no background heartbeat: keep the session alive while a long batch runs, and commit the
    // applied prefix as we go so a crash replays little. A rebalance makes the batch wind down quickly.
    const tick = setInterval(() => {
      heartbeat().catch((error) => {
        if (isRebalancing(error)) {
          rebalancing = true;
          groupError ??= error;
        }
      });
      void commitApplied();
    }, this.options.commitIntervalMs);

    try {
      const queues = groupByKey(messages);
      const perTransaction = eventsPerTransaction(
        this.options,
        BigInt(batch.highWatermark) - BigInt(messages[0]?.offset ?? batch.highWatermark),
      );
      const runQueues = async () => {
        for (let chunk = takeChunk(queues, perTransaction); chunk.length > 0; ) {
          // A chunk longer than the limit is one key's queue: its slices run one after the other, in order.
          const slice = chunk.splice(0, perTransaction);
          if (!keepGoing()) return;
          if (slice.length > 1 && (await this.applyTogether(partition, slice))) {
            for (const message of slice) progress.markDone(message.offset);
          } else {
            for (const message of slice) {
              if (!keepGoing()) return;
              const outcome = await this.apply(topic, partition, message, keepGoing);
              if (outcome.kind === "abandoned") return;
              if (outcome.kind === "dlq") await this.deadLetter(topic, partition, message, outcome);
              progress.markDone(message.offset);
            }
          }
          if (chunk.length === 0) chunk = takeChunk(queues, perTransaction);
        }
      };
      await Promise.all(
        Array.from({ length: Math.min(this.options.keyConcurrency, queues.length) }, () =>
          runQueues().catch((error) => {
            failure ??= error;
          }),
        ),
      );
    } finally {
      clearInterval(tick);
      await commitApplied();
    }
    const nextOffset = committed === undefined ? BigInt(messages[0]!.offset) : BigInt(committed) + 1n;
    this.options.metrics.lag.set(
      { topic, partition: String(partition) },
      Math.max(0, Number(BigInt(batch.highWatermark) - nextOffset)),
    );
    if (failure) throw failure;
    // kafkajs rejoins (and looks the coordinator up again) only when a group error reaches it. Swallowed here, a
    // coordinator that moved after a broker restart kept answering NOT_COORDINATOR to every commit and heartbeat
    // for over a minute while each batch wound down at its first tick (found by npm run test:faults).
    if (groupError) throw groupError;
  }

  /**
   * Applies `messages` (different keys, each key's in offset order) in one transaction. False when that cannot
   * be done: an undecodable message, or any failure of the transaction, which then rolled back as a whole. The
   * caller applies them one by one instead, with the usual retries and dead-lettering per event.
   */
  private async applyTogether(partition: number, messages: KafkaMessage[]): Promise<boolean> {
    let events: RawEventV1[];
    try {
      events = messages.map((message) => decodeRawEvent(message.value));
    } catch {
      return false;
    }
    try {
      const results = await resolveContacts(this.options.pool, events);
      for (const result of results) this.record(result);
      return true;
    } catch (error) {
      this.options.metrics.retries.inc({ reason: "chunk" });
      this.options.logger.debug(
        {
          source_partition: partition,
          events: messages.length,
          err_code: sqlState(error) || undefined,
          err: redactPii(errorMessage(error)),
        },
        "chunk failed; applying its events one by one",
      );
      return false;
    }
  }

  private async apply(
    topic: string,
    partition: number,
    message: KafkaMessage,
    keepGoing: () => boolean,
  ): Promise<Outcome> {
    const { metrics, logger, pool, maxAttempts } = this.options;
    let event: RawEventV1;
    try {
      event = decodeRawEvent(message.value);
    } catch (error) {
      logger.error(
        {
          source_topic: topic,
          source_partition: partition,
          source_offset: message.offset,
          error_class: (error as Error).name,
          err: redactPii(errorMessage(error)),
        },
        "crm_track_contact_resolve_failed",
      );
      return { kind: "dlq", error: error as Error, attempts: 1 };
    }
    let attempts = 0;
    for (let tries = 1; ; tries++) {
      try {
        const result = await resolveContact(pool, event);
        this.record(result);
        return { kind: "applied", result };
      } catch (error) {
        const kind = classifyFailure(error);
        if (kind !== "unavailable") attempts++;
        const giveUp = kind === "permanent" || attempts >= maxAttempts;
        logger[giveUp ? "error" : "warn"](
          {
            event_id: event.event_id,
            business_id: event.business_id,
            source_partition: partition,
            source_offset: message.offset,
            attempt: tries,
            failure: kind,
            err_code: sqlState(error) || undefined,
            error_class: (error as Error).name,
            err: redactPii(errorMessage(error)),
          },
          "crm_track_contact_resolve_failed",
        );
        if (giveUp) return { kind: "dlq", error: error as Error, attempts };
        if (!keepGoing()) return { kind: "abandoned" };
        metrics.retries.inc({ reason: kind });
        await sleep(backoff(Math.min(tries, 6)));
        if (!keepGoing()) return { kind: "abandoned" };
      }
    }
  }

  private record(result: ResolveResult): void {
    const { metrics } = this.options;
    metrics.applied.inc({ outcome: result.outcome });
    if (result.merged > 0) metrics.merges.inc(result.merged);
    if (result.conflicts > 0) metrics.conflicts.inc(result.conflicts);
    metrics.lockWaitSeconds.observe(result.lockWaitMs / 1_000);
    metrics.lockHoldSeconds.observe(result.lockHoldMs / 1_000);
    metrics.transactionSeconds.observe(result.transactionMs / 1_000);
  }

  private async deadLetter(
    topic: string,
    partition: number,
    message: KafkaMessage,
    outcome: Extract<Outcome, { kind: "dlq" }>,
  ) {
    const reason = redactPii(outcome.error.message).slice(0, 1_000);
    await this.options.dlq.send(this.options.dlqTopic, [
      {
        key: message.key?.toString("utf8") ?? "",
        value: message.value ?? Buffer.alloc(0),
        headers: {
          "error.class": outcome.error.name,
          "error.message": reason,
          attempts: String(outcome.attempts),
          "source.topic": topic,
          "source.partition": String(partition),
          "source.offset": message.offset,
        },
      },
    ]);
    this.options.metrics.dlq.inc({ error_class: outcome.error.name });
    this.options.logger.error(
      {
        source_topic: topic,
        source_partition: partition,
        source_offset: message.offset,
        error_class: outcome.error.name,
        attempts: outcome.attempts,
      },
      "event dead-lettered",
    );
  }
}
