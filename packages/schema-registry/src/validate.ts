import { TOPIC_SCHEMAS } from "@crm/schemas";
import Ajv, { type ErrorObject, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: string[] };

export interface ValidatorOptions {
  /**
   * A tolerant reader (consumers): fields the schema does not declare are dropped instead of failing, so a
   * consumer built against an older version keeps working when the producer adds an optional field. Producers
   * and CI checks validate strictly (the default), so undeclared fields never reach a topic.
   */
  tolerant?: boolean;
}

// The string form of RFC 4122. ajv-formats also takes "urn:uuid:<uuid>", which is a URN, not that form, and which
// Postgres's uuid type refuses: a value passing the schema must be storable.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The Ajv every schema of schemas/ is compiled with, here and inside @kafkajs/confluent-schema-registry: strict,
 * with formats. allErrors: a consumer or a CI check wants every problem at once, not the first one. Use one
 * instance per schema, because Ajv refuses a second schema with the same $id (a changed copy in a check, or two
 * versions of one subject).
 */
export function newAjv(options: ValidatorOptions = {}): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: true, removeAdditional: options.tolerant ?? false });
  addFormats(ajv);
  ajv.addFormat("uuid", UUID);
  return ajv;
}

function describe(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? "is invalid"}`);
}

/** A validator for one JSON Schema (compiled once; keep the function). */
export function createValidator<T>(
  schema: object,
  options: ValidatorOptions = {},
): (value: unknown) => Validation<T> {
  const validate: ValidateFunction = newAjv(options).compile(schema);
  return (value) =>
    validate(value) ? { ok: true, value: value as T } : { ok: false, errors: describe(validate.errors) };
}

export type TopicName = keyof typeof TOPIC_SCHEMAS;

const byTopic = new Map<string, (value: unknown) => Validation<unknown>>();

/** The validator of a topic's published value schema (schemas/<topic>.json). */
export function topicValidator<T>(
  topic: TopicName,
  options: ValidatorOptions = {},
): (value: unknown) => Validation<T> {
  const key = `${topic}:${options.tolerant ? "tolerant" : "strict"}`;
  let validator = byTopic.get(key);
  if (!validator) {
    validator = createValidator(TOPIC_SCHEMAS[topic], options);
    byTopic.set(key, validator);
  }
  return validator as (value: unknown) => Validation<T>;
}
