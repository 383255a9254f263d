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
 * topics, do not matter. An applied event re-evaluates the segments reading its type or contact data; on
 * contact.updated.v1, a new contact and a merge (the survivor, the contacts merged away) re-evaluate every segment,
 * and other changes are left to their event's message. Never throws; anything else is skipped with a reason.
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
  if (source === "contacts" && !type.startsWith("contact.merged")) {
    // contact.updated is written by the worker in the transaction that inserted its event, which arrives on
    // events.applied.v1 as well and re-evaluates the same contact (segments reading its fields included):
    // evaluating it twice per event would double the work for nothing.
    return {
      ok: false,
      expected: true,
      reason: "a contact change of an applied event (its events.applied.v1 message triggers)",
    };
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

/** The cause_event_id of a contact.updated.v1 value, when it is one (framed or plain JSON); never throws. */
function causeEventOf(value: Buffer | null | undefined): { eventId?: string } {
  if (!value || value.length > 1_000_000) return {};
  try {
    const id = (decodeFramedJson(value).value as { cause_event_id?: unknown } | null)?.cause_event_id;
    return isUuid(id) ? { eventId: id.toLowerCase() } : {};
  } catch {
    return {};
  }
}
