import { errorMessage } from "@crm/errors";
import type { EachBatchPayload, Kafka } from "@crm/kafka";
import type { Logger } from "@crm/logger";
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
 * the next round (TriggerRounds: every partition's batches of both topics together), wait until that round
 * committed them, then commit the offsets. A failure throws before the commit, and kafkajs hands the batch over
 * again: re-evaluation is idempotent, so at-least-once delivery changes nothing.
 */
export class TriggerConsumer {
  private readonly consumer: ReturnType<Kafka["consumer"]>;
  private joined = false;
  private stopping = false;
  private readonly rounds: TriggerRounds;

  constructor(private readonly options: TriggerConsumerOptions) {
    this.rounds = new TriggerRounds(options);
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      rebalanceTimeout: 60_000,
      heartbeatInterval: 3_000,
      // Up to 50 ms to gather a few KB: fewer, larger transactions when busy, at a latency the 2 s target affords.
      minBytes: 4_096,
      maxWaitTimeInMs: 50,
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

  async stop(): Promise<void> {
    this.stopping = true;
    await this.consumer.disconnect();
  }

  private async handleBatch({ batch, heartbeat, resolveOffset, isRunning, isStale }: EachBatchPayload) {
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
    if (byBusiness.size > 0) await this.rounds.add(byBusiness);
    if (!isRunning() || isStale()) return;
    await heartbeat();
    const last = batch.messages.at(-1);
    if (!last) return;
    const now = Date.now();
    for (const message of batch.messages) {
      this.options.metrics.triggerDelay.observe(Math.max(0, now - Number(message.timestamp)) / 1_000);
    }
    resolveOffset(last.offset);
    await this.consumer.commitOffsets([
      { topic: batch.topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() },
    ]);
    this.options.metrics.triggerLag.set({ topic: batch.topic }, Number(batch.offsetLag()));
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
      const list = this.pending.get(businessId);
      if (list) list.push(...triggers);
      else this.pending.set(businessId, [...triggers]);
    }
    const settled = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.running && !this.timer) this.timer = setTimeout(() => this.start(), this.options.lingerMs);
    return settled;
  }

  private start(): void {
    this.timer = undefined;
    if (this.running || this.waiters.length === 0) return;
    const taken = this.pending;
    const waiters = this.waiters;
    this.pending = new Map();
    this.waiters = [];
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
