import { NonRetriableError } from "@crm/errors";
import { normalizeIdentifiers } from "@crm/identity";
import { decodeFramedJson } from "@crm/kafka";
import { topicValidator } from "@crm/schema-registry";
import type { RawEventV1 } from "@crm/schemas";
import { eventIssues, timestampProblem, traitsProblem } from "@crm/storable";

// The published contract, schemas/events.raw.v1.json (the file that is registered as events.raw.v1-value),
// compiled once. Tolerant reader: a field the schema does not declare is dropped, not a reason to dead-letter.
const validateRawEvent = topicValidator<RawEventV1>("events.raw.v1", { tolerant: true });

/**
 * Decodes an `events.raw.v1` value. Anything that does not match the schema can never succeed: it is thrown as
 * NonRetriableError and dead-lettered. Identifiers are normalized again (idempotent on what ingest-api sends), so
 * a producer writing to the topic directly cannot split one person into two identities.
 *
 * Framing: ingest-api frames values for the schema registry (magic byte 0 + 4-byte schema id + JSON), and writes
 * plain JSON while the registry is unreachable, so plain JSON is accepted too. The schema id is not looked up:
 * every value, framed under any id or not framed, is validated by content against the published schema this
 * worker was built with. So the worker never waits on the registry (a registry outage stalls no partition), and a
 * wrong or unknown id cannot let anything through that the contract refuses. Under BACKWARD compatibility the
 * worker deploys a new schema version before any producer writes it.
 */
export function decodeRawEvent(value: Buffer | null): RawEventV1 {
  if (!value) throw new NonRetriableError("empty message value");
  let json: unknown;
  try {
    json = decodeFramedJson(value).value;
  } catch (error) {
    throw new NonRetriableError(`value is not JSON (framed or plain): ${(error as Error).message}`, {
      cause: error,
    });
  }
  // The edge's own rule (@crm/storable), checked again and before the schema, so no validator walks a hostile
  // depth: a message written by anything but ingest-api may hold what Postgres refuses (NUL, lone surrogates).
  const [problem] = eventIssues(json);
  if (problem) {
    throw new NonRetriableError(`value cannot be stored: ${problem.path.join(".")}: ${problem.message}`);
  }
  const checked = validateRawEvent(json);
  if (!checked.ok) {
    throw new NonRetriableError(
      `value does not match events.raw.v1: ${checked.errors.slice(0, 3).join("; ")}`,
    );
  }
  const event = checked.value;
  // A date-time the schema accepts that timestamptz cannot hold as meant (year 0, before 1900, a leap second).
  for (const field of ["occurred_at", "received_at"] as const) {
    const invalid = timestampProblem(event[field], undefined);
    if (invalid) throw new NonRetriableError(`value cannot be stored: ${field}: ${invalid}`);
  }
  const { name, traits } = event.contact;
  // the byte bound of traits, which the schema (maxProperties) cannot state
  const traitsTooLarge = traits === undefined ? undefined : traitsProblem(traits);
  if (traitsTooLarge) throw new NonRetriableError(`contact.traits ${traitsTooLarge}`);
  const { values, problems } = normalizeIdentifiers(event.contact);
  const [invalid] = problems;
  if (invalid) throw new NonRetriableError(`contact.${invalid.field} is invalid: ${invalid.reason}`);
  return {
    ...event,
    contact: {
      ...values,
      ...(name === undefined ? {} : { name }),
      ...(traits === undefined ? {} : { traits }),
    },
  };
}
