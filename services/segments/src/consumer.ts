import { errorMessage } from "@crm/errors";
import { type EachBatchPayload, type Kafka, OrderedCommits } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import { sleep } from "@crm/process";
import { decodeTrigger, type TriggerSource } from "./decode-trigger.ts";
import type { SegmentsMetrics } from "./metrics.ts";
import { type ContactTrigger, chunks, mergeTriggers } from "./reevaluate.ts";

export interface TriggerConsumerOptions {
  kafka: Kafka;
  logger: Logger;
  metrics: SegmentsMetrics;
  groupId: string;
  topics: Record<TriggerSource, string>;
  /** Contacts per transaction (one business each). */
  chunk: number;
  partitionConcurrency: number;
  /** Triggers waiting for a round beyond which fetching pauses (backpressure). */
  maxPending: number;
  /** How long the first trigger of a round waits for others (ms), and how many transactions a round runs at once. */
  lingerMs: number;
  evaluationConcurrency: number;
  sessionTimeoutMs: number;
  /** Re-evaluates the triggers of one business in one transaction. */
  reevaluate: (businessId: string, triggers: ContactTrigger[]) => Promise<unknown>;
  onFatal?: (error: Error) => void;
}

/**
 * Consumes contact.updated.v1 and events.applied.v1 as triggers. Per partition batch: decode, hand the triggers to
 * the next round (TriggerRounds: every partition's batches of both topics together) and return, so that kafkajs
 * fetches again at once (it fetches only when every batch of the previous fetch returned: waiting for the round
 * in each batch made a trigger wait for the round of the batch before it, ~0.4 s at 1,000 events/s, before it was
 * even read). Offsets are committed per partition in order once the rounds committed their triggers
 * (OrderedCommits); a failed round seeks its partitions back to their first uncommitted offset, and re-evaluation
 * is idempotent, so at-least-once delivery changes nothing. Fetching pauses while more than `maxPending` triggers
 * wait for a round.
 */
export class TriggerConsumer {
  private readonly consumer: ReturnType<Kafka["consumer"]>;
  private joined = false;
  private stopping = false;
  private readonly rounds: TriggerRounds;
  private readonly commits: OrderedCommits;
  /** After a failed round, batches wait until then (backing off while Postgres is away). */
  private retryAt = 0;
  private retryDelay = 0;

  constructor(private readonly options: TriggerConsumerOptions) {
    this.rounds = new TriggerRounds(options);
    this.commits = new OrderedCommits({
      commit: (next) => this.consumer.commitOffsets([next]),
      seek: (from) => this.consumer.seek(from),
      onFailure: (error, from) => {
        this.retryDelay = Math.min(5_000, Math.max(300, this.retryDelay * 2));
        this.retryAt = Date.now() + this.retryDelay;
        options.logger.error(
          { err: errorMessage(error), topic: from.topic, partition: from.partition, offset: from.offset },
          "re-evaluation failed: the partition is read again from its first uncommitted offset",
        );
      },
      onCommitError: (error, next) =>
        options.logger.warn(
          { err: errorMessage(error), topic: next.topic, partition: next.partition },
          "offset commit failed: the partition's next owner reads those triggers again",
        ),
    });
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      rebalanceTimeout: 60_000,
      heartbeatInterval: 3_000,
      // Up to 100 ms to gather 64 KB (~150 triggers): handing a batch over returns at once, so this alone bounds
      // how often the consumer fetches (bench 8: Kafka 175 -> 160 µs per event against 4 KB / 50 ms); a trigger
      // waits for the round in flight anyway.
      minBytes: 65_536,
      maxWaitTimeInMs: 100,
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 5_000 },
    });
    const { GROUP_JOIN, REBALANCING, CRASH, STOP } = this.consumer.events;
    this.consumer.on(GROUP_JOIN, () => {
      this.joined = true;
      // A new generation: batches of the old one are read again by their partitions' owners.
      this.commits.reset();
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
        { err: errorMessage(payload.error), restart: payload.restart },
        "consumer crashed",
      );
      if (!payload.restart && !this.stopping) options.onFatal?.(payload.error);
    });
  }

  /** True while the consumer holds a group assignment (for /readyz). */
  get ready(): boolean {
    return this.joined && !this.stopping;
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    for (const topic of Object.values(this.options.topics)) {
      await this.consumer.subscribe({ topic, fromBeginning: true });
    }
    await this.consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: this.options.partitionConcurrency,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  /** Stops fetching, lets the rounds commit what was handed over and commits its offsets, then leaves the group. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.consumer.stop();
    await this.commits.drain();
    await this.consumer.disconnect();
  }

  private async handleBatch({ batch, heartbeat, resolveOffset, isRunning, isStale }: EachBatchPayload) {
    const pause = this.retryAt - Date.now();
    if (pause > 0) await sleep(pause);
    const first = batch.messages[0];
    const last = batch.messages.at(-1);
    if (!first || !last || !isRunning() || isStale()) return;
    const source: TriggerSource = batch.topic === this.options.topics.events ? "events" : "contacts";
    const byBusiness = new Map<string, ContactTrigger[]>();
    for (const message of batch.messages) {
      const decoded = decodeTrigger(source, message);
      if (!decoded.ok) {
        if (decoded.expected) continue;
        this.options.logger.warn(
          { topic: batch.topic, partition: batch.partition, offset: message.offset, reason: decoded.reason },
          "trigger skipped",
        );
        continue;
      }
      const list = byBusiness.get(decoded.businessId) ?? [];
      list.push(decoded.trigger);
      byBusiness.set(decoded.businessId, list);
    }
    const sentAt = batch.messages.map((message) => Number(message.timestamp));
    const work = (byBusiness.size > 0 ? this.rounds.add(byBusiness) : Promise.resolve()).then(() => {
      this.retryDelay = 0;
      const now = Date.now();
      for (const at of sentAt) this.options.metrics.triggerDelay.observe(Math.max(0, now - at) / 1_000);
    });
    // The offsets are committed once the round committed the triggers (in order per partition); meanwhile kafkajs
    // fetches again, so what arrives during a round waits for the next round, not for this batch's.
    this.commits.track(batch.topic, batch.partition, first.offset, last.offset, work);
    resolveOffset(last.offset);
    this.options.metrics.triggerLag.set({ topic: batch.topic }, Number(batch.offsetLag()));
    await heartbeat();
    await this.rounds.room(this.options.maxPending);
  }
}

/**
 * Rounds of re-evaluation across partitions and topics. Keys are contacts, so one business's triggers are spread
 * over every partition: evaluated per partition batch, a busy business got a transaction of 2-3 contacts per
 * batch, and the fixed cost of a transaction (locks, clock, commit flush) was most of the work. A round takes every
 * trigger handed over since the previous round started (the first one waits `lingerMs` for company; under load,
 * whatever arrived while the previous round ran), merges each contact's triggers (its event and its contact
 * change become one evaluation), and re-evaluates business by business in chunks, round robin,
 * `evaluationConcurrency` transactions at a time. Rounds run one after another; each settles the promises of the
 * batches it took: resolved when all its transactions committed, rejected by the first failure.
 */
export class TriggerRounds {
  private pending = new Map<string, ContactTrigger[]>();
  private waiters: Array<{ resolve: () => void; reject: (error: unknown) => void }> = [];
  private pendingTriggers = 0;
  private roomWaiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly options: Pick<
      TriggerConsumerOptions,
      "chunk" | "lingerMs" | "evaluationConcurrency" | "reevaluate"
    >,
  ) {}

  /** Resolves once a round committed every trigger of `byBusiness`. */
  add(byBusiness: ReadonlyMap<string, ContactTrigger[]>): Promise<void> {
    for (const [businessId, triggers] of byBusiness) {
      this.pendingTriggers += triggers.length;
      const list = this.pending.get(businessId);
      if (list) list.push(...triggers);
      else this.pending.set(businessId, [...triggers]);
    }
    const settled = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.running && !this.timer) this.timer = setTimeout(() => this.start(), this.options.lingerMs);
    return settled;
  }

  /** Resolves once at most `limit` triggers wait for a round (at once, or when the next round takes them). */
  room(limit: number): Promise<void> {
    if (this.pendingTriggers <= limit) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  private start(): void {
    this.timer = undefined;
    if (this.running || this.waiters.length === 0) return;
    const taken = this.pending;
    const waiters = this.waiters;
    this.pending = new Map();
    this.waiters = [];
    this.pendingTriggers = 0;
    for (const resolve of this.roomWaiters.splice(0)) resolve();
    this.running = true;
    this.run(taken)
      .then(
        () => {
          for (const w of waiters) w.resolve();
        },
        (error: unknown) => {
          for (const w of waiters) w.reject(error);
        },
      )
      .finally(() => {
        this.running = false;
        // What arrived meanwhile waited a whole round already: no linger for it.
        if (this.waiters.length > 0) this.start();
      });
  }

  private async run(taken: Map<string, ContactTrigger[]>): Promise<void> {
    const queues = [...taken].map(([businessId, triggers]) => ({
      businessId,
      pending: chunks(mergeTriggers(triggers), this.options.chunk),
    }));
    // Round robin over the businesses: a business with many contacts does not go first with all of them.
    const work: Array<{ businessId: string; triggers: ContactTrigger[] }> = [];
    while (queues.some((q) => q.pending.length > 0)) {
      for (const queue of queues) {
        const next = queue.pending.shift();
        if (next) work.push({ businessId: queue.businessId, triggers: next });
      }
    }
    let failed: { error: unknown } | undefined;
    const lane = async () => {
      for (let item = work.shift(); item && !failed; item = work.shift()) {
        try {
          await this.options.reevaluate(item.businessId, item.triggers);
        } catch (error) {
          failed ??= { error };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.options.evaluationConcurrency) }, lane));
    if (failed) throw failed.error;
  }
}
