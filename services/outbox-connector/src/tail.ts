import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { parseEnv } from "@crm/config";
import {
  createKafka,
  decodeFramedJson,
  headerString,
  type KafkaMessage,
  kafkaCredentials,
  TOPICS,
} from "@crm/kafka";
import { z } from "zod";

const USAGE = `usage: npm run tail -- <topic> [--business <uuid>] [--from-beginning] [--max <n>] [--reveal]
  prints each message of <topic> (contact.updated.v1, events.raw.v1, events.dlq.v1, ...) as one JSON line,
  the value decoded (schema-registry frame or plain JSON); email and phone values are masked unless --reveal`;

const Env = z.object({
  KAFKA_BROKERS: z.string().min(1),
  // contact.updated.v1 is read as the read-only consumer principal; any other topic needs the tools' admin
  KAFKA_CONSUMER_USERNAME: z.string().min(1).optional(),
  KAFKA_CONSUMER_PASSWORD: z.string().min(1).optional(),
  KAFKA_ADMIN_USERNAME: z.string().min(1).optional(),
  KAFKA_ADMIN_PASSWORD: z.string().min(1).optional(),
});

const PII_FIELDS = new Set(["email", "phone"]);

/** Masks email and phone values anywhere in a decoded value, including `{type: "email", value}` identities. */
export function maskPii(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskPii);
  if (value === null || typeof value !== "object") return value;
  const record = value as Record<string, unknown>;
  const identity = typeof record.type === "string" && PII_FIELDS.has(record.type) && "value" in record;
  return Object.fromEntries(
    Object.entries(record).map(([name, field]) => {
      if ((PII_FIELDS.has(name) || (identity && name === "value")) && typeof field === "string") {
        return [name, "[masked]"];
      }
      return [name, maskPii(field)];
    }),
  );
}

/** events.raw.v1 keys are `business:kind:normalized`; the identifier part is masked for email and phone. */
export function maskKey(key: string | undefined): string | undefined {
  const [business, kind, ...rest] = key?.split(":") ?? [];
  if (!key || !kind || rest.length === 0 || !PII_FIELDS.has(kind)) return key;
  return `${business}:${kind}:[masked]`;
}

/** One message as the tail prints it. */
export function describeMessage(
  topic: string,
  partition: number,
  message: KafkaMessage,
  options: { reveal?: boolean } = {},
): { line: Record<string, unknown>; businessId: string | undefined } {
  const headers: Record<string, string | undefined> = {};
  for (const name of Object.keys(message.headers ?? {})) {
    if (!name.startsWith("__debezium")) headers[name] = headerString(message.headers, name);
  }
  let schemaId: number | undefined;
  let value: unknown = null;
  if (message.value) {
    try {
      ({ schemaId, value } = decodeFramedJson(message.value));
    } catch {
      value = { undecodable: message.value.toString("base64") };
    }
  }
  const key = message.key?.toString();
  const businessId =
    headers.business_id ??
    ((value as { business_id?: unknown } | null)?.business_id as string | undefined) ??
    (key?.includes(":") ? key.split(":")[0] : undefined);
  const line = {
    topic,
    partition,
    offset: message.offset,
    timestamp: new Date(Number(message.timestamp)).toISOString(),
    key: options.reveal ? key : maskKey(key),
    headers,
    ...(schemaId !== undefined ? { schema_id: schemaId } : {}),
    value: options.reveal ? value : maskPii(value),
  };
  return { line, businessId };
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      business: { type: "string" },
      "from-beginning": { type: "boolean", default: false },
      max: { type: "string" },
      reveal: { type: "boolean", default: false },
    },
  });
  const topic = positionals[0];
  if (!topic) {
    console.error(USAGE);
    return 2;
  }
  const env = parseEnv(Env);
  const max = values.max ? Number(values.max) : Number.POSITIVE_INFINITY;
  const principal = topic === TOPICS.contactUpdated ? "consumer" : "admin";
  const kafka = createKafka({
    brokers: env.KAFKA_BROKERS.split(","),
    clientId: "crm-tail",
    credentials: kafkaCredentials(env, principal) ?? null,
  });
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const consumer = kafka.consumer({ groupId: `crm-tail-${randomUUID()}`, maxWaitTimeInMs: 250 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let printed = 0;
  const done = new Promise<void>((resolve) => {
    void consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        if (printed >= max) return;
        const { line, businessId } = describeMessage(topic, partition, message, { reveal: values.reveal });
        if (values.business && businessId !== values.business) return;
        console.log(JSON.stringify(line));
        if (++printed >= max) resolve();
      },
    });
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
  if (!values["from-beginning"]) {
    for (const { partition, offset } of ends) consumer.seek({ topic, partition, offset });
  }
  await done;
  await consumer.disconnect();
  return 0;
}

if (process.argv[1]?.endsWith("tail.ts")) {
  main().then(
    (code) => process.exit(code),
    (error) => {
      console.error(`[tail] ${(error as Error).message}`);
      process.exit(1);
    },
  );
}
