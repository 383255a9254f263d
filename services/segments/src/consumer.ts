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
  sessionTimeoutMs: number;
  /** Re-evaluates the triggers of one business in one transaction. */
  reevaluate: (businessId: string, triggers: ContactTrigger[]) => Promise<unknown>;
  onFatal?: (error: Error) => void;
}

/**
 * Consumes contact.updated.v1 and events.applied.v1 as triggers. Per partition batch: decode, merge the triggers
 * of each contact, re-evaluate them business by business in bounded chunks (round robin, so a business with many
 * contacts in the batch does not go first with all of them), then commit. A failure throws before the commit, and
 * kafkajs hands the batch over again: re-evaluation is idempotent, so at-least-once delivery changes nothing.
 */
export class TriggerConsumer {
  private readonly consumer: ReturnType<Kafka["consumer"]>;
  private joined = false;
  private stopping = false;

  constructor(private readonly options: TriggerConsumerOptions) {
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
    const queues = [...byBusiness].map(([businessId, triggers]) => ({
      businessId,
      pending: chunks(mergeTriggers(triggers), this.options.chunk),
    }));
    while (queues.some((q) => q.pending.length > 0)) {
      for (const queue of queues) {
        const next = queue.pending.shift();
        if (!next) continue;
        if (!isRunning() || isStale()) return;
        await this.options.reevaluate(queue.businessId, next);
        await heartbeat();
      }
    }
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
