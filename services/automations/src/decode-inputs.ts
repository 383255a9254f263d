import { decodeContactChange } from "@crm/contact-consumer";
import { decodeFramedJson, headerString, type KafkaMessage } from "@crm/kafka";
import type { ContactUpdatedV1 } from "@crm/schemas";
import { jsonIssues } from "@crm/storable";
import { z } from "zod";
import type { ContactSnapshot } from "./conditions.ts";

/** What can fire a trigger, decoded from one of the three inputs. `causeId` is stable across redeliveries. */
export type Cause =
  | {
      source: "contact";
      businessId: string;
      contactId: string;
      causeId: string;
      at: string;
      change: ContactUpdatedV1["change"];
      changedFields: string[];
      contact: ContactSnapshot;
      value: ContactUpdatedV1;
    }
  | {
      source: "membership";
      businessId: string;
      contactId: string;
      causeId: string;
      at: string;
      segmentId: string;
      segmentVersion: number;
      change: "entered" | "exited";
      cause: unknown;
    }
  | {
      source: "event";
      businessId: string;
      contactId: string;
      causeId: string;
      at: string;
      eventId: string;
      type: string;
      props: Record<string, unknown>;
    };

export type Decoded = { ok: true; cause: Cause } | { ok: false; errors: string[] };

/**
 * A decoded value must be storable as jsonb (no NUL, no lone surrogate, bounded depth): it goes into the message's
 * payload, and a value Postgres refuses would otherwise fail its batch again on every redelivery.
 */
function storable(decoded: Decoded, value: unknown): Decoded {
  if (!decoded.ok) return decoded;
  const issues = jsonIssues(value, { maxDepth: 64 });
  return issues.length === 0
    ? decoded
    : { ok: false, errors: issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`) };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const Uuid = z
  .string()
  .regex(UUID, "must be a uuid")
  .transform((s) => s.toLowerCase());
const Instant = z
  .string()
  .max(64)
  .refine((s) => !Number.isNaN(Date.parse(s)), "must be a date-time");

/** `segment.membership.v1` (SPEC 11): key contact_id; extra fields of a later version are ignored. */
const Membership = z.object({
  business_id: Uuid,
  segment_id: Uuid,
  segment_version: z.number().int().min(1).max(2_147_483_647),
  contact_id: Uuid,
  change: z.enum(["entered", "exited"]),
  at: Instant,
  cause: z.unknown().optional(),
});

const problems = (error: z.ZodError) =>
  error.issues.slice(0, 5).map((i) => `${i.path.join(".")}: ${i.message}`);

function parseJson(bytes: Buffer | null): { ok: true; value: unknown } | { ok: false; errors: string[] } {
  if (!bytes || bytes.length === 0) return { ok: false, errors: ["empty value"] };
  try {
    return { ok: true, value: decodeFramedJson(bytes).value };
  } catch (error) {
    return { ok: false, errors: [`not JSON: ${(error as Error).message}`] };
  }
}

export function decodeContactUpdated(partition: number, message: KafkaMessage): Decoded {
  const decoded = decodeContactChange(partition, message);
  if (!decoded.ok) return decoded;
  const { value, id } = decoded.change;
  if (!UUID.test(value.business_id) || !UUID.test(value.contact_id))
    return { ok: false, errors: ["ids must be uuids"] };
  return storable(
    {
      ok: true,
      cause: {
        source: "contact",
        businessId: value.business_id.toLowerCase(),
        contactId: value.contact_id.toLowerCase(),
        causeId: `contact:${id}`,
        at: value.occurred_at,
        change: value.change,
        changedFields: value.changed_fields,
        contact: value.contact as ContactSnapshot,
        value,
      },
    },
    value,
  );
}

export function decodeMembership(message: KafkaMessage): Decoded {
  const json = parseJson(message.value);
  if (!json.ok) return json;
  // An outbox router without payload expansion sends the JSON as a JSON string: read either.
  let value = json.value;
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return { ok: false, errors: ["value is a string that is not JSON"] };
    }
  }
  const parsed = Membership.safeParse(value);
  if (!parsed.success) return { ok: false, errors: problems(parsed.error) };
  const m = parsed.data;
  return storable(
    {
      ok: true,
      cause: {
        source: "membership",
        businessId: m.business_id,
        contactId: m.contact_id,
        // the same transition redelivered has the same fields; another entry of the same contact has another `at`
        causeId: `membership:${m.segment_id}:${m.segment_version}:${m.contact_id}:${m.change}:${m.at}`,
        at: new Date(m.at).toISOString(),
        segmentId: m.segment_id,
        segmentVersion: m.segment_version,
        change: m.change,
        cause: m.cause,
      },
    },
    m.cause ?? null,
  );
}

const EventHeaders = z.object({
  id: Uuid,
  type: z.string().min(1).max(512),
  business_id: Uuid,
  occurred_at: Instant,
  contact_id: Uuid,
});

/** `events.applied.v1`: key contact_id, value the props object (JSON, possibly as a JSON string), headers. */
export function decodeEventApplied(message: KafkaMessage): Decoded {
  const headers = EventHeaders.safeParse({
    id: headerString(message.headers, "id"),
    type: headerString(message.headers, "type"),
    business_id: headerString(message.headers, "business_id"),
    occurred_at: headerString(message.headers, "occurred_at"),
    contact_id: message.key?.toString("utf8"),
  });
  if (!headers.success) return { ok: false, errors: problems(headers.error) };
  const json = parseJson(message.value);
  if (!json.ok) return json;
  let props = json.value;
  if (typeof props === "string") {
    try {
      props = JSON.parse(props);
    } catch {
      return { ok: false, errors: ["value is a string that is not JSON"] };
    }
  }
  if (props === null || typeof props !== "object" || Array.isArray(props)) {
    return { ok: false, errors: ["props must be a JSON object"] };
  }
  const h = headers.data;
  return storable(
    {
      ok: true,
      cause: {
        source: "event",
        businessId: h.business_id,
        contactId: h.contact_id,
        causeId: `event:${h.id}`,
        at: new Date(h.occurred_at).toISOString(),
        eventId: h.id,
        type: h.type,
        props: props as Record<string, unknown>,
      },
    },
    [props, h.type],
  );
}
