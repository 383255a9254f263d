import { randomUUID } from "node:crypto";
import { decodeFramedJson, headerString, type Kafka, type KafkaMessage } from "@crm/kafka";
import { isUuid } from "./contact-story.ts";
import { maskDeep, maskKey } from "./mask.ts";

/** One message as the console shows it: decoded (schema-registry framing understood), masked by default. */
export interface ShownMessage {
  topic: string;
  partition: number;
  offset: string;
  timestamp: string;
  key: string | undefined;
  headers: Record<string, string>;
  /** the writer's schema id when the value is framed */
  schemaId: number | undefined;
  /** the decoded JSON, or the text when it is not JSON, or null for a tombstone */
  value: unknown;
  /** "json" | "text" | "binary" | "null" */
  encoding: string;
  /** the business this message is about: header business_id, else the key's prefix, else the value's field */
  businessId: string | undefined;
}

const MAX_TEXT = 16_384;

/** Decodes one raw message; masked unless `reveal`. */
export function showMessage(
  topic: string,
  partition: number,
  message: KafkaMessage,
  options: { reveal?: boolean } = {},
): ShownMessage {
  const headers: Record<string, string> = {};
  for (const name of Object.keys(message.headers ?? {})) {
    headers[name] = (headerString(message.headers, name) ?? "").slice(0, 2_000);
  }
  const key = message.key?.toString("utf8");
  let value: unknown = null;
  let encoding = "null";
  let schemaId: number | undefined;
  if (message.value) {
    try {
      const decoded = decodeFramedJson(message.value);
      value = decoded.value;
      schemaId = decoded.schemaId;
      encoding = "json";
    } catch {
      const text = message.value.toString("utf8");
      // text unless it holds control characters (other than tab and newlines) or invalid UTF-8
      const printable = ![...text].some((ch) => {
        const code = ch.codePointAt(0)!;
        return (code < 32 && code !== 9 && code !== 10 && code !== 13) || code === 0xfffd;
      });
      value = printable ? text.slice(0, MAX_TEXT) : message.value.subarray(0, 512).toString("base64");
      encoding = printable ? "text" : "binary";
    }
  }
  const businessId = businessOf(headers, key, value);
  return {
    topic,
    partition,
    offset: message.offset,
    timestamp: new Date(Number(message.timestamp)).toISOString(),
    key: options.reveal ? key : maskKey(key),
    headers,
    schemaId,
    value: options.reveal ? value : maskDeep(value),
    encoding,
    businessId,
  };
}

/** The business of a message, from what every pipeline topic carries: a header, the raw key's prefix, a field. */
export function businessOf(
  headers: Record<string, string>,
  key: string | undefined,
  value: unknown,
): string | undefined {
  const header = headers.business_id;
  if (header && isUuid(header)) return header.toLowerCase();
  const prefix = key?.split(":")[0];
  if (prefix && isUuid(prefix)) return prefix.toLowerCase();
  const field = (value as { business_id?: unknown } | null)?.business_id;
  return typeof field === "string" && isUuid(field) ? field.toLowerCase() : undefined;
}

export interface PartitionInfo {
  partition: number;
  /** first offset still kept */
  low: string;
  /** next offset to be written */
  high: string;
}

export interface TopicInfo {
  topic: string;
  partitions: PartitionInfo[];
  messages: string;
  retentionMs: string | undefined;
  cleanupPolicy: string | undefined;
}

/** Partitions, offsets and retention of `topics` (a topic that does not exist is left out). */
export async function describeTopics(kafka: Kafka, topics: string[]): Promise<TopicInfo[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const out: TopicInfo[] = [];
    // One request per topic: a topic this principal may not describe (or that does not exist) fails alone.
    const configs = new Map<string, Record<string, string>>();
    for (const name of topics) {
      try {
        const described = await admin.describeConfigs({
          includeSynonyms: false,
          resources: [{ type: 2, name, configNames: ["retention.ms", "cleanup.policy"] }],
        });
        for (const r of described.resources) {
          configs.set(
            r.resourceName,
            Object.fromEntries(r.configEntries.map((e) => [e.configName, e.configValue])),
          );
        }
      } catch {
        // shown as unknown
      }
    }
    for (const topic of topics) {
      let offsets: { partition: number; offset: string; low: string; high: string }[];
      try {
        offsets = await admin.fetchTopicOffsets(topic);
      } catch {
        continue;
      }
      const partitions = offsets
        .map((o) => ({ partition: o.partition, low: o.low, high: o.high }))
        .sort((a, b) => a.partition - b.partition);
      const messages = partitions.reduce((sum, p) => sum + (BigInt(p.high) - BigInt(p.low)), 0n);
      out.push({
        topic,
        partitions,
        messages: messages.toString(),
        retentionMs: configs.get(topic)?.["retention.ms"],
        cleanupPolicy: configs.get(topic)?.["cleanup.policy"],
      });
    }
    return out;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

export interface BrowseQuery {
  topic: string;
  /** one partition, or every partition */
  partition?: number | undefined;
  /** first offset to read (per partition); default: the last `limit` messages of each partition */
  offset?: bigint | undefined;
  /** only messages whose key is exactly this */
  key?: string | undefined;
  limit: number;
}

/**
 * Reads a range of a topic once, with a throwaway consumer group (prefixed "console", as the ACLs allow) that
 * starts at the end of every partition and seeks the chosen ones to the start of their range, so only the asked
 * range arrives (admin.setOffsets would cost seconds per browse waiting on the new group's coordinator). Returns the raw messages, oldest first per partition, stopping at the end offsets the topic
 * had when the read began or after `timeoutMs`.
 */
export async function readRange(
  kafka: Kafka,
  query: BrowseQuery,
  timeoutMs = 8_000,
): Promise<{ partition: number; message: KafkaMessage }[]> {
  const admin = kafka.admin();
  await admin.connect();
  const groupId = `console-browse-${randomUUID().slice(0, 12)}`;
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100, sessionTimeout: 10_000 });
  try {
    const offsets = await admin.fetchTopicOffsets(query.topic);
    const chosen = offsets.filter((o) => query.partition === undefined || o.partition === query.partition);
    const wanted = new Map<number, { from: bigint; to: bigint }>();
    for (const o of chosen) {
      const low = BigInt(o.low);
      const high = BigInt(o.high);
      let from = query.offset ?? high - BigInt(query.limit);
      if (from < low) from = low;
      if (from > high) from = high;
      const to = from + BigInt(query.key === undefined ? query.limit : 10_000);
      if (from < high) wanted.set(o.partition, { from, to: to < high ? to : high });
    }
    if (wanted.size === 0) return [];
    const out: { partition: number; message: KafkaMessage }[] = [];
    const done = new Set<number>();
    await consumer.connect();
    await consumer.subscribe({ topic: query.topic });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      const running = consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch }) => {
          const range = wanted.get(batch.partition);
          if (!range) return;
          for (const message of batch.messages) {
            const offset = BigInt(message.offset);
            if (offset >= range.to) break;
            if (query.key === undefined || message.key?.toString("utf8") === query.key) {
              out.push({ partition: batch.partition, message });
            }
          }
          const last = BigInt(batch.messages.at(-1)?.offset ?? -1);
          if (last + 1n >= range.to) done.add(batch.partition);
          if (done.size === wanted.size) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
      // A new group starts every partition at its end; the asked ones move to the start of their range.
      void running.then(() => {
        for (const [partition, range] of wanted) {
          consumer.seek({ topic: query.topic, partition, offset: range.from.toString() });
        }
      });
    });
    out.sort(
      (a, b) => a.partition - b.partition || Number(BigInt(a.message.offset) - BigInt(b.message.offset)),
    );
    return out;
  } finally {
    await consumer.disconnect().catch(() => {});
    await admin.deleteGroups([groupId]).catch(() => {});
    await admin.disconnect().catch(() => {});
  }
}
