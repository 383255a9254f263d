import { NonRetriableError } from "@crm/errors";
import type { RawEventV1 } from "@crm/schemas";
import { z } from "zod";

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
  occurred_at: z.iso.datetime({ offset: true }),
  received_at: z.iso.datetime({ offset: true }),
  source: z.object({ kind: z.enum(["user", "ingest_key"]), id_hash: z.string() }),
});

/** Decodes an `events.raw.v1` value; anything that does not match the schema can never succeed: DLQ it. */
export function decodeRawEvent(value: Buffer | null): RawEventV1 {
  if (!value) throw new NonRetriableError("empty message value");
  let json: unknown;
  try {
    json = JSON.parse(value.toString("utf8"));
  } catch (error) {
    throw new NonRetriableError("value is not JSON", { cause: error });
  }
  const parsed = RawEvent.safeParse(json);
  if (!parsed.success) {
    throw new NonRetriableError(
      `value does not match events.raw.v1: ${parsed.error.issues[0]?.message ?? "?"}`,
    );
  }
  return parsed.data as RawEventV1;
}
