import { isTransientDbError, type Pool } from "@crm/db";
import { errorMessage, NonRetriableError } from "@crm/errors";
import { type EachBatchPayload, type EventProducer, type Kafka, type KafkaMessage, TOPICS } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { decodeRawEvent } from "./decode-event.ts";
import type { WorkerMetrics } from "./metrics.ts";
import { resolveContact } from "./resolve-contact.ts";

export interface ConsumerOptions {
  kafka: Kafka;
  pool: Pool;
  dlq: EventProducer;
  logger: Logger;
  metrics: WorkerMetrics;
  groupId: string;
  maxAttempts: number;
  keyConcurrency: number;
  partitionConcurrency: number;
}

/** What happened to one message; exceptions are reserved for infrastructure failures. */
type Outcome = { kind: "applied" } | { kind: "dlq"; error: Error; attempts: number };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** True when the database itself is unreachable: the batch stops uncommitted instead of dead-lettering events. */
function isConnectionLoss(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code ?? "";
  return (
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P03", "08006", "08001"].includes(code) ||
    /Connection terminated|cannot connect/i.test(errorMessage(error))
  );
}

/**
 * Consumes `events.raw.v1`: within a partition batch, messages with the same key are applied one by one in
 * offset order while different keys run concurrently; the committed offset only ever advances to the first
 * message not yet applied (or dead-lettered), so a crash, rebalance or shutdown replays instead of losing, and
 * replays are harmless because the resolver dedupes on event id.
 */
export class ResolverConsumer {
  private readonly consumer;

  constructor(private readonly options: ConsumerOptions) {
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: 30_000,
      heartbeatInterval: 3_000,
      maxWaitTimeInMs: 100,
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 5_000 },
    });
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: TOPICS.raw, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: this.options.partitionConcurrency,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  async stop(): Promise<void> {
    // disconnect() waits for the running batches, which commit what they applied, then leaves the group.
    await this.consumer.disconnect();
  }

  private async handleBatch({ batch, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition, messages } = batch;
    if (messages.length === 0) return;
    const done = new Set<string>();
    const byKey = new Map<string, KafkaMessage[]>();
    for (const message of messages) {
      const key = message.key?.toString("utf8") ?? "";
      const list = byKey.get(key) ?? [];
      list.push(message);
      byKey.set(key, list);
    }
    // kafkajs has no background heartbeat: keep the session alive while a long batch runs.
    const beat = setInterval(() => void heartbeat().catch(() => {}), 2_000);
    let failure: unknown;
    try {
      const queues = [...byKey.values()];
      const runQueue = async () => {
        for (let queue = queues.shift(); queue; queue = queues.shift()) {
          for (const message of queue) {
            if (!isRunning() || isStale() || failure) return;
            const outcome = await this.apply(message);
            if (outcome.kind === "dlq") await this.deadLetter(topic, partition, message, outcome);
            done.add(message.offset);
          }
        }
      };
      const workers = Array.from({ length: Math.min(this.options.keyConcurrency, queues.length) }, () =>
        runQueue().catch((error) => {
          failure ??= error;
        }),
      );
      await Promise.all(workers);
    } finally {
      clearInterval(beat);
      await this.commitContiguous(topic, partition, messages, done, isStale());
    }
    if (failure) throw failure;
    this.options.metrics.lag.set({ partition: String(partition) }, Number(batch.offsetLag()));
  }

  /** Commits up to (not including) the first message of the batch that is not done. */
  private async commitContiguous(
    topic: string,
    partition: number,
    messages: KafkaMessage[],
    done: Set<string>,
    stale: boolean,
  ): Promise<void> {
    if (stale) return; // the partition moved to another member; it will replay from the last commit
    let next: string | undefined;
    for (const message of messages) {
      if (!done.has(message.offset)) break;
      next = (BigInt(message.offset) + 1n).toString();
    }
    if (next !== undefined) await this.consumer.commitOffsets([{ topic, partition, offset: next }]);
  }

  private async apply(message: KafkaMessage): Promise<Outcome> {
    const { metrics, logger, pool, maxAttempts } = this.options;
    let event: RawEventV1;
    try {
      event = decodeRawEvent(message.value);
    } catch (error) {
      return { kind: "dlq", error: error as Error, attempts: 1 };
    }
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await resolveContact(pool, event, (_tag, ms) =>
          metrics.transactionSeconds.observe(ms / 1000),
        );
        metrics.applied.inc({ outcome: result.outcome });
        return { kind: "applied" };
      } catch (error) {
        if (isConnectionLoss(error)) throw error;
        const retriable = !(error instanceof NonRetriableError) && isTransientDbError(error);
        logger.warn(
          {
            event_id: event.event_id,
            business_id: event.business_id,
            attempt,
            err_code: (error as { code?: string }).code,
            err: errorMessage(error),
          },
          "crm_track_contact_resolve_failed",
        );
        if (!retriable && attempt >= 2) return { kind: "dlq", error: error as Error, attempts: attempt };
        if (attempt >= maxAttempts) return { kind: "dlq", error: error as Error, attempts: attempt };
        metrics.retries.inc();
        await sleep(Math.min(2_000, 50 * 2 ** attempt) * (0.5 + Math.random()));
      }
    }
  }

  private async deadLetter(
    topic: string,
    partition: number,
    message: KafkaMessage,
    outcome: Extract<Outcome, { kind: "dlq" }>,
  ) {
    await this.options.dlq.send(TOPICS.dlq, [
      {
        key: message.key?.toString("utf8") ?? "",
        value: message.value ?? Buffer.alloc(0),
        headers: {
          "error.class": outcome.error.name,
          "error.message": outcome.error.message.slice(0, 1_000),
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
        source_partition: partition,
        source_offset: message.offset,
        error_class: outcome.error.name,
        attempts: outcome.attempts,
      },
      "event dead-lettered",
    );
  }
}
