import { TOPIC_SCHEMAS } from "@crm/schemas";
import { type SchemaRegistryClient, valueSubject } from "./client.ts";
import type { TopicName } from "./validate.ts";

type JsonSchema = {
  type?: unknown;
  enum?: unknown;
  required?: string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
};

/**
 * What a consumer written against `registered` relies on and `candidate` takes away: a required field that is
 * no longer required, is gone, or changed its type. The registry's BACKWARD rule lets a new schema drop a
 * required field (new readers can still read old data), but every existing consumer of the topic would then
 * meet messages without it, so our check refuses that too.
 */
export function removedGuarantees(registered: object, candidate: object, path = ""): string[] {
  const before = registered as JsonSchema;
  const after = candidate as JsonSchema;
  const problems: string[] = [];
  const required = new Set(after.required ?? []);
  for (const field of before.required ?? []) {
    if (!after.properties?.[field]) problems.push(`${path}${field}: required field removed`);
    else if (!required.has(field)) problems.push(`${path}${field}: no longer required`);
  }
  for (const [field, was] of Object.entries(before.properties ?? {})) {
    const now = after.properties?.[field];
    if (!now) continue;
    const at = `${path}${field}`;
    if (was.type !== undefined && JSON.stringify(was.type) !== JSON.stringify(now.type)) {
      problems.push(`${at}: type changed from ${JSON.stringify(was.type)} to ${JSON.stringify(now.type)}`);
    }
    if (Array.isArray(was.enum) && Array.isArray(now.enum)) {
      const gone = was.enum.filter((v) => !(now.enum as unknown[]).includes(v));
      if (gone.length > 0) problems.push(`${at}: enum values removed: ${gone.join(", ")}`);
    }
    problems.push(...removedGuarantees(was, now, `${at}.`));
    if (was.items && now.items) problems.push(...removedGuarantees(was.items, now.items, `${at}[].`));
  }
  return problems;
}

export interface SchemaCheck {
  topic: string;
  subject: string;
  /** new: nothing registered yet; unchanged: this exact content is the latest version. */
  status: "new" | "unchanged" | "compatible" | "incompatible";
  latestVersion?: number;
  messages: string[];
}

/**
 * Compares a topic's schema with what the registry holds: the registry's own compatibility check (the subject's
 * level, BACKWARD) and `removedGuarantees` against the latest registered version.
 */
export async function checkTopicSchema(
  client: SchemaRegistryClient,
  topic: string,
  schema: object,
): Promise<SchemaCheck> {
  const subject = valueSubject(topic);
  const latest = await client.latest(subject);
  if (!latest) return { topic, subject, status: "new", messages: [] };
  if (JSON.stringify(latest.schema) === JSON.stringify(schema)) {
    return { topic, subject, status: "unchanged", latestVersion: latest.version, messages: [] };
  }
  const registry = await client.checkCompatibility(subject, schema);
  const messages = [
    ...(registry && !registry.compatible
      ? [
          `registry refuses it under ${(await client.compatibility(subject)) ?? "the global level"}`,
          ...registry.messages,
        ]
      : []),
    ...removedGuarantees(latest.schema, schema),
  ];
  return {
    topic,
    subject,
    status: messages.length > 0 ? "incompatible" : "compatible",
    latestVersion: latest.version,
    messages,
  };
}

export class IncompatibleSchemaError extends Error {
  constructor(readonly check: SchemaCheck) {
    super(
      `schema of ${check.topic} is incompatible with ${check.subject} v${check.latestVersion}:\n  ${check.messages.join("\n  ")}`,
    );
    this.name = "IncompatibleSchemaError";
  }
}

/**
 * Registers a topic's value schema under `<topic>-value` with BACKWARD compatibility, after `checkTopicSchema`
 * passed; returns its id (the same id when the content is already registered). Idempotent, so producers call it
 * at start-up to learn the id they frame messages with.
 */
export async function registerTopicSchema(
  client: SchemaRegistryClient,
  topic: string,
  schema: object = TOPIC_SCHEMAS[topic as TopicName],
): Promise<number> {
  if (!schema) throw new Error(`no schema for topic ${topic} in schemas/`);
  const check = await checkTopicSchema(client, topic, schema);
  if (check.status === "incompatible") throw new IncompatibleSchemaError(check);
  const subject = valueSubject(topic);
  if ((await client.compatibility(subject)) !== "BACKWARD")
    await client.setCompatibility(subject, "BACKWARD");
  return client.register(subject, schema);
}
