import { isConnectionFailure, isTransientDbError, type Pool } from "@crm/db";
import { errorMessage, NonRetriableError } from "@crm/errors";
import type { Consumer, EachBatchPayload, EventProducer, Kafka, KafkaMessage } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { BatchProgress } from "./batch-progress.ts";
import { ChunkCombiner } from "./chunk-combiner.ts";
import { decodeRawEvent } from "./decode-event.ts";
import { EventRetries, type FailureKind } from "./event-retries.ts";
import type { WorkerMetrics } from "./metrics.ts";
import { redactPii } from "./redact.ts";
import { type ResolveResult, resolveContact, resolveContacts } from "./resolve-contact.ts";
import { isSuppressed } from "./suppression.ts";

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
  /** How long one event may keep failing while the database answers other queries before it is dead-lettered. */
  maxRetryMs: number;
  keyConcurrency: number;
  /** Events applied in one transaction when they can be (1 = one transaction per event). */
  eventsPerTransaction?: number;
  /**
   * Chunks are used only while a partition is at least this far behind (messages from the batch's first offset to
   * the high watermark): catching up gets chunk throughput, a worker keeping up gets one short transaction per
   * event and its short lock hold (SPEC 7). 0 = always chunk.
   */
  chunkMinLag?: number;
  /** Events per transaction while a partition lags by `backlogMinLag` or more (a backlog: throughput first). */
  backlogEventsPerTransaction?: number;
  backlogMinLag?: number;
  partitionConcurrency: number;
  /**
   * Chunks (and single events) that concurrent runners submit within `combineLingerMs` of each other go in one
   * transaction of at most `combineMaxEvents` (ChunkCombiner). 0 ms = each chunk its own transaction.
   */
  combineLingerMs?: number;
  combineMaxEvents?: number;
  /** A fetch answers once this many bytes are there, or after 100 ms (fewer, fuller fetches). */
  fetchMinBytes?: number;
  commitIntervalMs: number;
  sessionTimeoutMs: number;
  /**
   * ERASURE_HASH_SECRET: events carrying an identifier on the suppression list (issue 18) are dropped and counted,
   * never stored. Unset only in tests of the resolve path alone.
   */
  suppressionSecret?: string;
  /** Called when the consumer crashed for good (kafkajs will not restart it): the process should exit. */
  onFatal?: (error: Error) => void;
}

/**
 * What happened to one attempt at a message; exceptions are reserved for infrastructure failures. `retry`: it
 * failed and is tried again after `delayMs`, in a later fetch of its partition (see `handleBatch`).
 */
type Outcome =
  | { kind: "applied"; result: ResolveResult }
  | { kind: "suppressed" }
  | { kind: "dlq"; error: Error; failure: FailureKind; attempts: number; retriedMs: number }
  | { kind: "retry"; delayMs: number; databaseDown: boolean };

function sqlState(error: unknown): string {
  return (error as { code?: string } | null)?.code ?? "";
}

/**
 * unavailable: the database did not answer (no connection, or a server shutting down or starting): waited out,
 * dead-lettered only if the database answers other queries all along `maxRetryMs`.
 * permanent: the event itself is bad (contract violation, data exception, constraint other than a race).
 * transient: any other error from a live server, 08P01 "invalid message format" included, and serialization
 * failures, deadlocks, lock timeouts, unique races: retried `maxAttempts` times (and at most `maxRetryMs`), then
 * dead-lettered.
 */
export function classifyFailure(error: unknown): FailureKind {
  if (isConnectionFailure(error)) return "unavailable";
  if (error instanceof NonRetriableError) return "permanent";
  const code = sqlState(error);
  if (isTransientDbError(error) || code === "23505") return "transient";
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

/**
 * This batch's chunk size: the backlog's while the partition lags by `backlogMinLag` or more, the configured one
 * while it lags by `chunkMinLag` or more, else 1.
 */
export function eventsPerTransaction(
  options: Pick<
    ConsumerOptions,
    "eventsPerTransaction" | "chunkMinLag" | "backlogEventsPerTransaction" | "backlogMinLag"
  >,
  lag: bigint,
): number {
  const max = Math.max(1, options.eventsPerTransaction ?? 1);
  if (options.backlogEventsPerTransaction !== undefined && options.backlogMinLag !== undefined) {
    if (lag >= BigInt(options.backlogMinLag)) return Math.max(max, options.backlogEventsPerTransaction);
  }
  return lag >= BigInt(options.chunkMinLag ?? 0) ? max : 1;
}

const keyOf = (message: KafkaMessage): string => message.key?.toString("utf8") ?? "";

function groupByKey(messages: KafkaMessage[]): KafkaMessage[][] {
  const byKey = new Map<string, KafkaMessage[]>();
  for (const message of messages) {
    const key = keyOf(message);
    const list = byKey.get(key);
    if (list) list.push(message);
    else byKey.set(key, [message]);
  }
  return [...byKey.values()];
}

/**
 * The key queues in key order, for chunks: a key starts with its business id (SPEC 5), so consecutive queues, and
 * therefore a chunk, are mostly one business's, which `app.resolve_contacts` applies set-based per business (its
 * fixed cost per business of a chunk is about a dozen statements). Only locality depends on it, never correctness.
 */
export function queuesForChunks(queues: KafkaMessage[][]): KafkaMessage[][] {
  return queues
    .map((queue) => ({ key: keyOf(queue[0]!), queue }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map(({ queue }) => queue);
}

/** What a retry left behind on one partition of the current assignment. */
interface HeldPartition {
  /** Offsets past the committed prefix that an earlier pass applied or dead-lettered: not done twice. */
  doneAhead: Set<string>;
  /** Resumes fetching the partition once the backoff of its failing event has passed. */
  resumeTimer?: NodeJS.Timeout;
}

/**
 * Consumes raw events: within a partition batch, messages with the same key are applied one by one in offset
 * order while different keys run concurrently; the committed offset only ever advances to the first message not
 * yet applied (or dead-lettered), so a crash, rebalance or shutdown replays instead of losing, and replays are
 * harmless because the resolver dedupes on event id under the event's advisory lock.
 *
 * A failing event never waits inside a batch: kafkajs fetches again only when every batch of a fetch has
 * returned, so one batch sleeping through retries would stop every partition. Its key stops for the rest of the
 * batch, the other keys go on, the applied prefix is committed, its partition is paused and resumed after the
 * backoff; kafkajs then fetches the partition again from the resolved offset, the failing event first.
 */
export class ResolverConsumer {
  private readonly consumer: Consumer;
  private readonly retries: EventRetries;
  private readonly combiner: ChunkCombiner<RawEventV1, ResolveResult> | undefined;
  private readonly held = new Map<string, HeldPartition>();
  /** Bumped whenever the retry state is forgotten, so a batch of an older assignment does not pause anything. */
  private generation = 0;
  private probe: { at: number; answers: Promise<boolean> } | undefined;
  private joined = false;
  private stopping = false;

  constructor(private readonly options: ConsumerOptions) {
    this.retries = new EventRetries({ maxAttempts: options.maxAttempts, maxRetryMs: options.maxRetryMs });
    const { pool, suppressionSecret } = options;
    this.combiner =
      (options.combineLingerMs ?? 0) > 0
        ? new ChunkCombiner(
            async (events: RawEventV1[]) =>
              events.length === 1
                ? [await resolveContact(pool, events[0]!, suppressionSecret)]
                : resolveContacts(pool, events, suppressionSecret),
            { maxItems: Math.max(1, options.combineMaxEvents ?? 50), lingerMs: options.combineLingerMs ?? 0 },
          )
        : undefined;
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      rebalanceTimeout: 60_000,
      heartbeatInterval: 3_000,
      maxWaitTimeInMs: 100,
      minBytes: options.fetchMinBytes ?? 1,
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 5_000 },
    });
    const { GROUP_JOIN, REBALANCING, CRASH, STOP } = this.consumer.events;
    this.consumer.on(GROUP_JOIN, () => {
      this.joined = true;
      // A new assignment: kafkajs fetches every partition from its committed offset again, and a partition moved
      // away and back must not stay paused by a timer we drop here.
      this.forgetRetries();
      const paused = this.consumer.paused();
      if (paused.length > 0) this.consumer.resume(paused);
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
    // An event waiting for its retry stays uncommitted: the next owner of its partition starts it afresh.
    this.forgetRetries();
    // disconnect() stops fetching, waits for the running batches (which finish the events in flight and commit
    // their applied prefix), then leaves the group so the partitions move at once.
    await this.consumer.disconnect();
  }

  private forgetRetries(): void {
    this.generation++;
    for (const held of this.held.values()) clearTimeout(held.resumeTimer);
    this.held.clear();
    this.retries.clear();
  }

  private heldPartition(topic: string, partition: number): HeldPartition {
    const id = `${topic}|${partition}`;
    let held = this.held.get(id);
    if (!held) {
      held = { doneAhead: new Set() };
      this.held.set(id, held);
    }
    return held;
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, heartbeat, resolveOffset, isRunning, isStale, pause } = payload;
    const { topic, partition, messages } = batch;
    if (messages.length === 0) return;
    const generation = this.generation;
    const held = this.heldPartition(topic, partition);
    const progress = new BatchProgress(messages.map((message) => message.offset));
    for (const message of messages) if (held.doneAhead.has(message.offset)) progress.markDone(message.offset);
    let rebalancing = false;
    // The group error that ended the batch early; rethrown at the end so kafkajs rejoins (see below).
    let groupError: unknown;
    let failure: unknown;
    // Keys whose event failed and waits for its retry: their later events wait too (per-key order).
    const waitingKeys = new Set<string>();
    let retryInMs: number | undefined;
    // The database does not answer at all: the events not yet tried would fail the same way.
    let databaseDown = false;
    const keepGoing = () =>
      isRunning() && !isStale() && !rebalancing && failure === undefined && !databaseDown;

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
      const perTransaction = eventsPerTransaction(
        this.options,
        BigInt(batch.highWatermark) - BigInt(messages[0]?.offset ?? batch.highWatermark),
      );
      const byKey = groupByKey(messages.filter((message) => !held.doneAhead.has(message.offset)));
      // one event per transaction keeps arrival order (latency); chunks gather a business's keys
      const queues = perTransaction > 1 ? queuesForChunks(byKey) : byKey;
      const runQueues = async () => {
        for (let chunk = takeChunk(queues, perTransaction); chunk.length > 0; ) {
          // A chunk longer than the limit is one key's queue: its slices run one after the other, in order.
          const slice = chunk.splice(0, perTransaction).filter((message) => !waitingKeys.has(keyOf(message)));
          if (!keepGoing()) return;
          // a lone event joins the other runners' chunks of the moment when they are combined
          const together = slice.length > 1 || (slice.length === 1 && this.combiner !== undefined);
          if (together && (await this.applyTogether(partition, slice))) {
            for (const message of slice) progress.markDone(message.offset);
          } else {
            for (const message of slice) {
              if (!keepGoing()) return;
              if (waitingKeys.has(keyOf(message))) continue;
              const outcome = await this.apply(topic, partition, message);
              if (outcome.kind === "retry") {
                waitingKeys.add(keyOf(message));
                retryInMs = Math.min(retryInMs ?? Number.POSITIVE_INFINITY, outcome.delayMs);
                if (outcome.databaseDown) databaseDown = true;
                continue;
              }
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
    const lastOffset = BigInt(messages.at(-1)!.offset);
    held.doneAhead = new Set([
      ...progress.doneBeyondPrefix(),
      ...[...held.doneAhead].filter((offset) => BigInt(offset) > lastOffset),
    ]);
    if (
      retryInMs !== undefined &&
      generation === this.generation &&
      isRunning() &&
      !isStale() &&
      !rebalancing
    ) {
      // Nothing past the applied prefix is resolved, so the next fetch of this partition starts at the first
      // event not done, after the backoff; the rest of this fetch and the other partitions go on meanwhile.
      const resume = pause();
      held.resumeTimer = setTimeout(() => {
        held.resumeTimer = undefined;
        resume();
      }, retryInMs);
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
   * Applies `messages` (different keys, each key's in offset order) in one transaction, which the combiner may
   * share with other runners' chunks of the same moment (their keys are never these). False when that cannot
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
      const results = this.combiner
        ? await this.combiner.submit(events)
        : await resolveContacts(this.options.pool, events, this.options.suppressionSecret);
      for (const result of results) this.record(result);
      return true;
    } catch (error) {
      this.options.metrics.retries.inc({ reason: isSuppressed(error) ? "suppressed" : "chunk" });
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

  /** One attempt at one message; a failure is remembered by the message's position until it is settled. */
  private async apply(topic: string, partition: number, message: KafkaMessage): Promise<Outcome> {
    const { metrics, logger, pool } = this.options;
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
      return { kind: "dlq", error: error as Error, failure: "permanent", attempts: 1, retriedMs: 0 };
    }
    const position = `${topic}|${partition}|${message.offset}`;
    try {
      const result = await resolveContact(pool, event, this.options.suppressionSecret);
      this.retries.settled(position);
      this.record(result);
      return { kind: "applied", result };
    } catch (error) {
      if (isSuppressed(error)) {
        // an erased person's event: dropped (the transaction stored nothing), counted, never logged with values
        this.retries.settled(position);
        metrics.suppressed.inc();
        return { kind: "suppressed" };
      }
      const failure = classifyFailure(error);
      // A statement error is an answer; a connection failure may be this event's doing (a statement that kills
      // its backend) or an outage: a probe query tells them apart.
      const databaseAnswers = failure !== "unavailable" || (await this.databaseAnswers());
      const decision = this.retries.failed(position, failure, databaseAnswers);
      const giveUp = decision.action === "dlq";
      logger[giveUp ? "error" : "warn"](
        {
          event_id: event.event_id,
          business_id: event.business_id,
          source_partition: partition,
          source_offset: message.offset,
          attempt: decision.attempts,
          failure,
          database_answers: databaseAnswers,
          retry_in_ms: giveUp ? undefined : Math.round(decision.delayMs),
          err_code: sqlState(error) || undefined,
          error_class: (error as Error).name,
          err: redactPii(errorMessage(error)),
        },
        "crm_track_contact_resolve_failed",
      );
      if (decision.action === "dlq") {
        return {
          kind: "dlq",
          error: error as Error,
          failure,
          attempts: decision.attempts,
          retriedMs: decision.retriedMs,
        };
      }
      metrics.retries.inc({ reason: failure });
      return { kind: "retry", delayMs: decision.delayMs, databaseDown: !databaseAnswers };
    }
  }

  /**
   * Whether Postgres answers `SELECT 1` now (2 s at most). One probe at a time, its answer reused for a second:
   * during an outage every partition asks at once.
   */
  private databaseAnswers(): Promise<boolean> {
    const now = Date.now();
    if (!this.probe || now - this.probe.at > 1_000) {
      let timer: NodeJS.Timeout | undefined;
      const answers = Promise.race([
        this.options.pool.query("SELECT 1").then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), 2_000);
        }),
      ]).finally(() => clearTimeout(timer));
      this.probe = { at: now, answers };
    }
    return this.probe.answers;
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
          "error.kind": outcome.failure,
          attempts: String(outcome.attempts),
          "retried.ms": String(Math.round(outcome.retriedMs)),
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
        failure: outcome.failure,
        attempts: outcome.attempts,
        retried_ms: Math.round(outcome.retriedMs),
      },
      "event dead-lettered",
    );
  }
}
