import { NonRetriableError } from "@crm/errors";
import { type Normalized, normalizeEmail, normalizeExternalId, normalizePhone } from "@crm/identity";
import { decodeFramedJson } from "@crm/schema-registry";
import type { RawEventV1 } from "@crm/schemas";
import { eventIssues, timestampProblem } from "@crm/storable";
import { z } from "zod";

function storableTimestamp(ctx: { value: string; issues: unknown[] }) {
  const problem = timestampProblem(ctx.value, undefined);
  if (problem) ctx.issues.push({ code: "custom", input: ctx.value, message: problem });
}

const RawEvent = z.object({
  event_id: z.uuid(),
  business_id: z.uuid(),
  type: z.string().min(1).max(128),
  contact: z.object({
    external_id: z.string().min(1).max(255).optional(),
    email: z.string().max(254).optional(),
    phone: z
      .string()
      .regex(/^\+[1-9]\d{6,14}$/)
      .optional(),
    name: z.string().max(255).optional(),
  }),
  props: z.record(z.string(), z.unknown()),
  occurred_at: z.iso.datetime({ offset: true }).check(storableTimestamp),
  received_at: z.iso.datetime({ offset: true }).check(storableTimestamp),
  source: z.object({ kind: z.enum(["user", "ingest_key"]), id_hash: z.string() }),
});

/**
 * Decodes an `events.raw.v1` value. Anything that does not match the schema can never succeed: it is thrown as
 * NonRetriableError and dead-lettered. Identifiers are normalized again (idempotent on what ingest-api sends), so
 * a producer writing to the topic directly cannot split one person into two identities.
 */
export function decodeRawEvent(value: Buffer | null): RawEventV1 {
  if (!value) throw new NonRetriableError("empty message value");
  // ingest-api frames values for the schema registry (magic byte 0 + 4-byte schema id + JSON); plain JSON is
  // accepted too, for producers that write without the registry.
  let json: unknown;
  try {
    json = decodeFramedJson(value).value;
  } catch (error) {
    throw new NonRetriableError(`value is not JSON (framed or plain): ${(error as Error).message}`, {
      cause: error,
    });
  }
  // The edge's own rule (@crm/storable), checked again: a message written by anything but ingest-api may hold
  // what Postgres refuses (NUL, lone surrogates, year 0) or a depth meant to exhaust a validator.
  const [problem] = eventIssues(json);
  if (problem) {
    throw new NonRetriableError(`value cannot be stored: ${problem.path.join(".")}: ${problem.message}`);
  }
  const parsed = RawEvent.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new NonRetriableError(
      `value does not match events.raw.v1: ${issue?.path.join(".") ?? "?"}: ${issue?.message ?? "?"}`,
    );
  }
  const event = parsed.data as RawEventV1;
  const { external_id, email, phone, name } = event.contact;
  return {
    ...event,
    contact: {
      ...(external_id === undefined
        ? {}
        : { external_id: valid("external_id", normalizeExternalId(external_id)) }),
      ...(email === undefined ? {} : { email: valid("email", normalizeEmail(email)) }),
      ...(phone === undefined ? {} : { phone: valid("phone", normalizePhone(phone)) }),
      ...(name === undefined ? {} : { name }),
    },
  };
}

function valid(field: string, result: Normalized<string>): string {
  if (!result.ok) throw new NonRetriableError(`contact.${field} is invalid: ${result.reason}`);
  return result.value;
}
