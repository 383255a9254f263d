import { decodeFramedJson, headerString, type KafkaMessage } from "@crm/kafka";
import { isUuid } from "@crm/segment-definitions";
import type { ContactTrigger } from "./reevaluate.ts";

/** Which trigger topic a message came from: contact changes (contact.updated.v1) or applied events (events.applied.v1). */
export type TriggerSource = "contacts" | "events";

export type DecodedTrigger =
  | { ok: true; businessId: string; trigger: ContactTrigger }
  /** `expected`: not a trigger by design (no warning); otherwise a malformed message. */
  | { ok: false; reason: string; expected?: true };

/**
 * A message of a trigger topic as "re-evaluate contact X of business B". Only the key (contact id) and headers
 * (business_id, type, id) are read: the state itself is read from Postgres, so the value, and the order of the two
 * topics, do not matter (except contact.updated's changed_fields, which say which segments to evaluate). An applied
 * event re-evaluates the segments reading its type or the activity times; on contact.updated.v1, a new contact and
 * a merge (the survivor, the contacts merged away) re-evaluate every segment, an update those reading a changed
 * field. Never throws; anything else is skipped with a reason.
 */
export function decodeTrigger(
  source: TriggerSource,
  message: Pick<KafkaMessage, "key" | "headers" | "value">,
): DecodedTrigger {
  const contactId = message.key?.toString("utf8");
  const businessId = headerString(message.headers, "business_id");
  if (!isUuid(contactId)) return { ok: false, reason: "key is not a contact id" };
  if (!isUuid(businessId)) return { ok: false, reason: "business_id header is not a uuid" };
  const type = headerString(message.headers, "type") ?? "";
  const id = headerString(message.headers, "id");
  if (source === "contacts" && type === "contact.created") {
    // A new contact: every segment, including those its first event's type cannot touch (a rule true for an empty
    // history, like "no login in 14 days", must enter it now).
    return {
      ok: true,
      businessId: businessId.toLowerCase(),
      trigger: {
        contactId: contactId.toLowerCase(),
        cause: { cause: "event", ...causeEventOf(message.value) },
        all: true,
      },
    };
  }
  if (source === "contacts" && type === "contact.updated") {
    // A change of the contact's fields or traits (identifiers added, a name, traits): the segments reading one of
    // changed_fields. first/last_seen_at move with every event and write no contact.updated row: the event's
    // events.applied.v1 message evaluates the segments reading them.
    const change = contactChangeOf(message.value);
    if (!change) return { ok: false, reason: "contact.updated value without changed_fields" };
    return {
      ok: true,
      businessId: businessId.toLowerCase(),
      trigger: {
        contactId: contactId.toLowerCase(),
        cause: { cause: "contact", ...(change.eventId ? { eventId: change.eventId } : {}) },
        fields: change.fields,
      },
    };
  }
  if (source === "contacts" && !type.startsWith("contact.merged")) {
    // contact.erased: the memberships went with the contact (its erasure deleted them).
    return { ok: false, expected: true, reason: `${type}: not a trigger` };
  }
  const trigger: ContactTrigger =
    source === "contacts"
      ? { contactId: contactId.toLowerCase(), cause: { cause: "merge" }, all: true }
      : {
          contactId: contactId.toLowerCase(),
          cause: { cause: "event", ...(isUuid(id) ? { eventId: id.toLowerCase() } : {}) },
          eventTypes: new Set([type]),
        };
  return { ok: true, businessId: businessId.toLowerCase(), trigger };
}

/** A contact.updated.v1 value (framed or plain JSON) as far as a trigger reads it; undefined if not one. */
function contactValueOf(value: Buffer | null | undefined): Record<string, unknown> | undefined {
  if (!value || value.length > 1_000_000) return undefined;
  try {
    const decoded = decodeFramedJson(value).value;
    return decoded !== null && typeof decoded === "object" && !Array.isArray(decoded)
      ? (decoded as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The cause_event_id of a contact.updated.v1 value, when it is one; never throws. */
function causeEventOf(value: Buffer | null | undefined): { eventId?: string } {
  const id = contactValueOf(value)?.cause_event_id;
  return isUuid(id) ? { eventId: id.toLowerCase() } : {};
}

/** changed_fields (strings only) and cause_event_id of a contact.updated.v1 value; undefined without the list. */
function contactChangeOf(
  value: Buffer | null | undefined,
): { fields: Set<string>; eventId?: string } | undefined {
  const decoded = contactValueOf(value);
  const fields = decoded?.changed_fields;
  if (!Array.isArray(fields)) return undefined;
  const id = decoded!.cause_event_id;
  return {
    fields: new Set(fields.filter((f): f is string => typeof f === "string")),
    ...(isUuid(id) ? { eventId: id.toLowerCase() } : {}),
  };
}
