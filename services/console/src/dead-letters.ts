import { randomUUID } from "node:crypto";
import { decodeFramedJson, headerString, type Kafka, type KafkaMessage } from "@crm/kafka";

import type { Logger } from "@crm/logger";
import { businessOf } from "./messages.ts";

/** One message of the dead-letter topic, with what the worker wrote in its headers (resolver-worker consumer.ts). */
export interface DeadLetter {
  /** `dlq:<topic>:<partition>:<offset>`: its name in the audit trail */
  id: string;
  partition: number;
  offset: string;
  at: string;
  key: string;
  /** the original bytes, replayed as they are */
  value: Buffer;
  errorClass: string;
  reason: string;
  /** permanent | transient | unavailable */
  errorKind: string;
  attempts: number;
  sourceTopic: string;
  sourcePartition: string;
  sourceOffset: string;
  /** set when this dead letter came from a console replay: the dead letter that was replayed */
  replayOf: string | undefined;
  eventId: string | undefined;
  eventType: string | undefined;
  businessId: string | undefined;
}

export const deadLetterId = (topic: string, partition: number, offset: string) =>
  `dlq:${topic}:${partition}:${offset}`;

/** Reads a DLQ message into a DeadLetter (undecodable values still list, with what the headers say). */
export function toDeadLetter(topic: string, partition: number, message: KafkaMessage): DeadLetter {
  const header = (name: string) => headerString(message.headers, name) ?? "";
  const headers: Record<string, string> = {};
  for (const name of Object.keys(message.headers ?? {})) headers[name] = header(name);
  const key = message.key?.toString("utf8") ?? "";
  const value = message.value ?? Buffer.alloc(0);
  let decoded: Record<string, unknown> | undefined;
  try {
    const json = decodeFramedJson(value).value;
    if (json && typeof json === "object" && !Array.isArray(json)) decoded = json as Record<string, unknown>;
  } catch {
    decoded = undefined;
  }
  const text = (field: string) =>
    typeof decoded?.[field] === "string" ? (decoded[field] as string) : undefined;
  return {
    id: deadLetterId(topic, partition, message.offset),
    partition,
    offset: message.offset,
    at: new Date(Number(message.timestamp)).toISOString(),
    key,
    value,
    errorClass: header("error.class"),
    reason: header("error.message"),
    errorKind: header("error.kind"),
    attempts: Number(header("attempts")) || 0,
    sourceTopic: header("source.topic"),
    sourcePartition: header("source.partition"),
    sourceOffset: header("source.offset"),
    replayOf: headerString(message.headers, "console.replay-of"),
    eventId: text("event_id")?.slice(0, 64),
    eventType: text("type")?.slice(0, 128),
    businessId: businessOf(headers, key, decoded),
  };
}

/**
 * The dead-letter topic, read from its beginning and kept in memory (the newest `max`), live: the worker's new
 * dead letters appear within a poll. Its consumer group is this instance's own and never commits, so every start
 * reads the topic whole and two console instances do not split it.
 */
export class DeadLetterLog {
  private readonly entries = new Map<string, DeadLetter>();
  private consumer: ReturnType<Kafka["consumer"]> | undefined;
  private caughtUp = false;

  constructor(
    private readonly options: {
      kafka: Kafka;
      topic: string;
      logger: Logger;
      max?: number;
    },
  ) {}

  async start(): Promise<void> {
    const consumer = this.options.kafka.consumer({
      groupId: `console-dlq-${randomUUID().slice(0, 12)}`,
      maxWaitTimeInMs: 250,
      sessionTimeout: 10_000,
    });
    this.consumer = consumer;
    await consumer.connect();
    await consumer.subscribe({ topic: this.options.topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const message of batch.messages) this.add(toDeadLetter(batch.topic, batch.partition, message));
        this.caughtUp = true;
      },
    });
  }

  private add(entry: DeadLetter): void {
    this.entries.set(entry.id, entry);
    const max = this.options.max ?? 5_000;
    if (this.entries.size > max) this.entries.delete(this.entries.keys().next().value as string);
  }

  get ready(): boolean {
    return this.consumer !== undefined;
  }

  /** Newest first. */
  list(): DeadLetter[] {
    return [...this.entries.values()].sort((a, b) => b.at.localeCompare(a.at) || b.id.localeCompare(a.id));
  }

  get(id: string): DeadLetter | undefined {
    return this.entries.get(id);
  }

  get size(): number {
    return this.entries.size;
  }

  get loaded(): boolean {
    return this.caughtUp;
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect().catch(() => {});
  }
}

/** The dead letter's value decoded (framed or plain JSON), or its text when it is not JSON. */
export function deadLetterValue(entry: DeadLetter): unknown {
  try {
    return decodeFramedJson(entry.value).value;
  } catch {
    return entry.value.toString("utf8").slice(0, 4_000);
  }
}

/**
 * Sends a dead letter back to the raw topic exactly as it arrived (same key, same bytes, so the same event id):
 * the worker applies it if it was never applied, and its dedupe on event id makes a second replay, or a replay of
 * an event that did get applied, change nothing. Headers name the dead letter it came from.
 */
export async function replayDeadLetter(
  producer: ReturnType<Kafka["producer"]>,
  rawTopic: string,
  entry: DeadLetter,
  actor: string,
): Promise<{ partition: number; offset: string }> {
  const [written] = await producer.send({
    topic: rawTopic,
    acks: -1,
    messages: [
      {
        key: entry.key,
        value: entry.value,
        headers: { "console.replay-of": entry.id, "console.replayed-by": actor },
      },
    ],
  });
  // Where it landed: a replay that fails again comes back as a dead letter whose source is this position.
  return { partition: written?.partition ?? -1, offset: written?.baseOffset ?? "-1" };
}
