import { decodeFramedJson, headerString, type KafkaMessage } from "@crm/kafka";
import { isUuid } from "@crm/segment-definitions";
import type { ContactTrigger } from "./reevaluate.ts";

/** Which trigger topic a message came from: contact changes (contact.updated.v1) or applied events (events.applied.v1). */
export type TriggerSource = "contacts" | "events";

export type DecodedTrigger =
  | { ok: true; businessId: string; trigger: ContactTrigger }
  | { ok: false; reason: string };

/**
 * A message of a trigger topic as "re-evaluate contact X of business B". Only the key (contact id) and headers
 * (business_id, type, id) are read, and a contact change's cause_event_id (the event that changed it, named as the
 * cause of what it changes): the state itself is read from Postgres, so the rest of the value, and the order of the
 * two topics, do not matter. Never throws; anything else than two uuids is skipped with a reason.
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
  const trigger: ContactTrigger =
    source === "contacts"
      ? {
          contactId: contactId.toLowerCase(),
          cause: type.startsWith("contact.merged")
            ? { cause: "merge" }
            : { cause: "event", ...causeEventOf(message.value) },
          all: true,
        }
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
    const parsed = decodeFramedJson(value).value as { cause_event_id?: unknown } | null;
    const id = parsed?.cause_event_id;
    return isUuid(id) ? { eventId: id.toLowerCase() } : {};
  } catch {
    return {};
  }
}
