import { isTransientDbError, type Pool, transaction } from "@crm/db";
import { errorMessage } from "@crm/errors";
import type { EachBatchPayload, Kafka, KafkaMessage } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import {
  type Cause,
  type Decoded,
  decodeContactUpdated,
  decodeEventApplied,
  decodeMembership,
} from "./decode-inputs.ts";
import { type MatchOutcome, matchCauses } from "./match.ts";
import type { AutomationsMetrics } from "./metrics.ts";

class GroupRefused extends Error {}

export interface InputTopics {
  contact?: string;
  membership?: string;
  events?: string;
}

export interface TriggerConsumerOptions {
  kafka: Kafka;
  pool: Pool;
  logger: Logger;
  metrics: AutomationsMetrics;
  groupId: string;
  /** The delivery queue the deliveries it creates belong to (its group). */
  queue: string;
  topics: InputTopics;
  fromBeginning: boolean;
  /** Called after a transaction created deliveries due now: the delivery loop looks at once instead of polling. */
  onDue: () => void;
  onFatal: () => void;
  sessionTimeoutMs?: number;
  /** Messages matched in one transaction (and committed together). */
  chunkSize?: number;
}

/**
 * Consumes the three inputs (contact changes, segment memberships, applied events) and turns what fires a trigger
 * into messages and deliveries in Postgres. A partition's messages are matched in chunks, each ONE transaction
 * (the tenant set per message); the offset is committed only after its chunk committed. A redelivered message finds
 * its messages already there (deterministic ids, ON CONFLICT DO NOTHING), so at-least-once consumption gives
 * exactly one logical message. A message that cannot be decoded, or that Postgres refuses, is counted and skipped
 * (a savepoint isolates it): it never stops the partition. Only an outage of Postgres stops progress, and nothing
 * is committed past it.
 */
export class TriggerConsumer {
  private readonly consumer: ReturnType<Kafka["consumer"]>;
  private readonly decoders = new Map<string, (partition: number, m: KafkaMessage) => Decoded>();
  ready = false;

  constructor(private readonly options: TriggerConsumerOptions) {
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      maxWaitTimeInMs: 100,
      ...(options.sessionTimeoutMs
        ? {
            sessionTimeout: options.sessionTimeoutMs,
            heartbeatInterval: Math.min(3_000, options.sessionTimeoutMs / 3),
          }
        : {}),
    });
    const { contact, membership, events } = options.topics;
    if (contact) this.decoders.set(contact, decodeContactUpdated);
    if (membership) this.decoders.set(membership, (_p, m) => decodeMembership(m));
    if (events) this.decoders.set(events, (_p, m) => decodeEventApplied(m));
  }

  async start(): Promise<void> {
    const { consumer } = this;
    consumer.on(consumer.events.GROUP_JOIN, () => {
      this.ready = true;
    });
    consumer.on(consumer.events.CRASH, (event) => {
      this.ready = false;
      if (!event.payload.restart) this.options.onFatal();
    });
    await consumer.connect();
    await consumer.subscribe({
      topics: [...this.decoders.keys()],
      fromBeginning: this.options.fromBeginning,
    });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 3,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }

  private async handleBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) {
    const decode = this.decoders.get(batch.topic)!;
    const size = this.options.chunkSize ?? 200;
    for (let start = 0; start < batch.messages.length; start += size) {
      if (!isRunning() || isStale()) return;
      const chunk = batch.messages.slice(start, start + size);
      const dueNow = await this.applyChunk(batch.topic, batch.partition, chunk, decode);
      const last = chunk.at(-1)!.offset;
      await this.consumer.commitOffsets([
        { topic: batch.topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() },
      ]);
      resolveOffset(last);
      if (dueNow) this.options.onDue();
      await heartbeat();
    }
  }

  /** One transaction for the chunk; returns whether a delivery due now was created. */
  private async applyChunk(
    topic: string,
    partition: number,
    messages: KafkaMessage[],
    decode: (partition: number, m: KafkaMessage) => Decoded,
  ): Promise<boolean> {
    const { metrics, logger } = this.options;
    const outcomes: string[] = [];
    let dueNow = false;
    const causes: { cause: Cause; offset: string }[] = [];
    for (const message of messages) {
      const decoded = decode(partition, message);
      if (decoded.ok) causes.push({ cause: decoded.cause, offset: message.offset });
      else {
        outcomes.push("invalid");
        logger.warn(
          { topic, partition, offset: message.offset, errors: decoded.errors },
          "input skipped: invalid",
        );
      }
    }
    const byBusiness = new Map<string, { cause: Cause; offset: string }[]>();
    for (const item of causes) {
      const list = byBusiness.get(item.cause.businessId) ?? [];
      list.push(item);
      byBusiness.set(item.cause.businessId, list);
    }
    const count = (results: MatchOutcome[]) => {
      for (const result of results) {
        outcomes.push(result.outcome);
        if (result.outcome === "matched") {
          metrics.messages.inc(result.messages);
          dueNow ||= result.dueNow;
        }
      }
    };
    await transaction(this.options.pool, "automations.match", async (client) => {
      // All of a business's causes in a few statements, under a savepoint; if Postgres refuses the group, each
      // cause again under its own, so only the one it refuses is skipped.
      const attempt = async (businessId: string, group: { cause: Cause; offset: string }[]) => {
        await client.query("SAVEPOINT input");
        try {
          await client.query("SELECT set_config('app.business_id', $1, true)", [businessId]);
          const results = await matchCauses(
            client,
            businessId,
            group.map((g) => g.cause),
            this.options.queue,
          );
          await client.query("RELEASE SAVEPOINT input");
          return results;
        } catch (error) {
          if (isTransientDbError(error)) throw error;
          await client.query("ROLLBACK TO SAVEPOINT input");
          if (group.length === 1) {
            logger.warn(
              { topic, partition, offset: group[0]!.offset, err: errorMessage(error) },
              "input skipped: the database refused it",
            );
            return undefined;
          }
          throw new GroupRefused();
        }
      };
      for (const [businessId, group] of byBusiness) {
        try {
          const results = await attempt(businessId, group);
          if (results) count(results);
          else outcomes.push("refused");
        } catch (error) {
          if (!(error instanceof GroupRefused)) throw error;
          for (const one of group) {
            const results = await attempt(businessId, [one]);
            if (results) count(results);
            else outcomes.push("refused");
          }
        }
      }
    });
    for (const outcome of outcomes) metrics.inputs.inc({ topic, outcome });
    return dueNow;
  }
}
