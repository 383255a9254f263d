import {
  createKafka,
  type EachBatchPayload,
  type Kafka,
  type KafkaCredentials,
  type KafkaMessage,
  TOPICS,
} from "@crm/kafka";
import { type ContactChange, decodeContactChange } from "./decode-change.ts";
import { decodeMembershipChange, type MembershipChange } from "./decode-membership.ts";
import { type DedupeStore, MemoryDedupeStore } from "./dedupe.ts";

export interface InvalidMessage {
  partition: number;
  offset: string;
  errors: string[];
}

/** What every outbox topic's reader is given, whatever its messages. */
export interface OutboxConsumerOptions<C> {
  /** Brokers (KAFKA_BROKERS split on commas), or a kafkajs client you built. */
  kafka: string[] | Kafka;
  /**
   * The principal to authenticate as when `kafka` is a broker list: the read-only consumer principal
   * (`kafkaCredentials(env, "consumer")`, KAFKA_CONSUMER_* in `.stack/env`); null for a broker without SASL. Left
   * out, the stack's admin principal from `.stack/env` (tools and tests only).
   */
  credentials?: KafkaCredentials | null;
  /** Your consumer group: committed offsets belong to it. */
  groupId: string;
  /**
   * The callback: a message is committed only after this resolved for it. If it throws, the same change is
   * handed over again (kafkajs retries the batch, then restarts the consumer) and nothing after it in that
   * partition is delivered first: the partition waits until the callback succeeds.
   */
  onChange: (change: C) => Promise<void> | void;
  /** Default: the reader's own topic; another topic with the same contract (tests, replays). */
  topic?: string;
  /** Where a new group starts: true = the topic's oldest message (default), false = only new ones. */
  fromBeginning?: boolean;
  /** Default: the last 100,000 ids in memory (see MemoryDedupeStore). */
  dedupe?: DedupeStore;
  /** A message that fails the schema is skipped (and committed past) after this; default: a warning line. */
  onInvalid?: (message: InvalidMessage) => Promise<void> | void;
  /** Called for each duplicate that was not handed to onChange (metrics). */
  onDuplicate?: (change: C) => void;
  /** Commit at least this often while a batch is long (ms); default 1000. */
  commitIntervalMs?: number;
}

export interface ContactConsumerOptions extends OutboxConsumerOptions<ContactChange> {
  /**
   * The erase handler (issue 18): called instead of onChange for a change `erased`, with every contact id to
   * forget (the erased contact and the contacts merged into it). Delete everything you hold of them; the same
   * commit rule as onChange applies. Left out, onChange receives the `erased` change like any other.
   */
  onErase?: (erasure: ContactErasure) => Promise<void> | void;
}
export type MembershipConsumerOptions = OutboxConsumerOptions<MembershipChange>;

type Decoder<C> = (
  partition: number,
  message: KafkaMessage,
) => { ok: true; change: C } | { ok: false; errors: string[] };

/**
 * Reads one outbox topic for a downstream team: validates each value against the published schema, drops changes
 * it has already delivered (outbox `id` header), hands each change to `onChange` in partition order (so per
 * contact in commit order), and commits an offset only after the callback for it returned.
 */
export class OutboxTopicConsumer<C extends { id: string }> {
  readonly stats = { delivered: 0, duplicates: 0, invalid: 0 };
  private readonly consumer: ReturnType<Kafka["consumer"]>;
  private readonly dedupe: DedupeStore;
  private readonly topic: string;

  constructor(
    protected readonly options: OutboxConsumerOptions<C>,
    defaultTopic: string,
    private readonly decode: Decoder<C>,
  ) {
    const kafka = Array.isArray(options.kafka)
      ? createKafka({
          brokers: options.kafka,
          clientId: `contact-consumer-${options.groupId}`,
          credentials: options.credentials,
        })
      : options.kafka;
    this.consumer = kafka.consumer({ groupId: options.groupId, maxWaitTimeInMs: 250 });
    this.dedupe = options.dedupe ?? new MemoryDedupeStore();
    this.topic = options.topic ?? defaultTopic;
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topic, fromBeginning: this.options.fromBeginning ?? true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }

  private async handleBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) {
    const interval = this.options.commitIntervalMs ?? 1_000;
    let pending: string | undefined;
    let lastCommit = Date.now();
    const commit = async () => {
      if (pending === undefined) return;
      await this.consumer.commitOffsets([
        { topic: batch.topic, partition: batch.partition, offset: (BigInt(pending) + 1n).toString() },
      ]);
      pending = undefined;
      lastCommit = Date.now();
    };
    try {
      for (const message of batch.messages) {
        if (!isRunning() || isStale()) break;
        await this.handleMessage(batch.partition, message);
        resolveOffset(message.offset);
        pending = message.offset;
        if (Date.now() - lastCommit >= interval) await commit();
        await heartbeat();
      }
    } finally {
      // Also when a callback threw: what was handled before it stays handled.
      await commit();
    }
  }

  /** Hands one new change to the callback; a topic's reader may route some changes elsewhere. */
  protected async deliver(change: C): Promise<void> {
    await this.options.onChange(change);
  }

  private async handleMessage(partition: number, message: KafkaMessage): Promise<void> {
    const decoded = this.decode(partition, message);
    if (!decoded.ok) {
      this.stats.invalid++;
      const invalid = { partition, offset: message.offset, errors: decoded.errors };
      await (this.options.onInvalid ?? warnInvalid)(invalid);
    } else if (await this.dedupe.has(decoded.change.id)) {
      this.stats.duplicates++;
      this.options.onDuplicate?.(decoded.change);
    } else {
      await this.deliver(decoded.change);
      await this.dedupe.add(decoded.change.id);
      this.stats.delivered++;
    }
  }
}

/**
 * Consumes `contact.updated.v1` (SPEC 8): every contact change, per contact in version order, deduplicated on the
 * outbox id.
 */
export class ContactConsumer extends OutboxTopicConsumer<ContactChange> {
  private readonly onErase: ContactConsumerOptions["onErase"];

  constructor(options: ContactConsumerOptions) {
    super(options, TOPICS.contactUpdated, decodeContactChange);
    this.onErase = options.onErase;
  }

  protected override async deliver(change: ContactChange): Promise<void> {
    const erasure = this.onErase ? erasureOf(change) : undefined;
    if (erasure) await this.onErase!(erasure);
    else await super.deliver(change);
  }
}

/**
 * Consumes `segment.membership.v1` (issue 16): every entry into and exit from a segment, per contact in commit
 * order, deduplicated on the outbox id (Debezium delivers at least once).
 */
export class MembershipConsumer extends OutboxTopicConsumer<MembershipChange> {
  constructor(options: MembershipConsumerOptions) {
    super(options, TOPICS.segmentMembership, decodeMembershipChange);
  }
}

/** What the erase handler gets: ids only (the message carries no personal data). */
export interface ContactErasure {
  businessId: string;
  /** The erased contact (the message's key) first, then those merged into it. */
  contactIds: string[];
  /** The erasure's audit id (`cause_event_id`). */
  erasureId: string;
  change: ContactChange;
}

/** The erasure a change announces, or undefined for any other change. */
export function erasureOf(change: ContactChange): ContactErasure | undefined {
  if (change.value.change !== "erased") return undefined;
  return {
    businessId: change.businessId,
    contactIds: [change.value.contact_id, ...(change.value.merged_from ?? [])],
    erasureId: change.value.cause_event_id,
    change,
  };
}

function warnInvalid(message: InvalidMessage): void {
  console.warn(
    `[contact-consumer] skipping message at partition ${message.partition} offset ${message.offset}: ${message.errors.join("; ")}`,
  );
}
