import { decodeFramedJson, headerString, type KafkaMessage } from "@crm/kafka";
import { topicValidator } from "@crm/schema-registry";
import type { SegmentMembershipV1 } from "@crm/schemas";

/** One entry into or exit from a segment, as handed to the callback. */
export interface MembershipChange {
  /** The outbox id (header `id`): a change delivered twice carries the same id. */
  id: string;
  /** `segment.entered` or `segment.exited` (header `type`). */
  type: string;
  businessId: string;
  contactId: string;
  value: SegmentMembershipV1;
  partition: number;
  offset: string;
  /** When the message reached Kafka (ms since epoch, as a string, like kafkajs). */
  timestamp: string;
}

export type DecodedMembership = { ok: true; change: MembershipChange } | { ok: false; errors: string[] };

// Tolerant: a field added by a newer schema version is dropped, not a reason to refuse the change.
const validate = topicValidator<SegmentMembershipV1>("segment.membership.v1", { tolerant: true });

/**
 * Decodes one `segment.membership.v1` message (framed or plain JSON) and validates it against the published
 * schema. Never throws: a message that does not match is a value the caller decides about.
 */
export function decodeMembershipChange(partition: number, message: KafkaMessage): DecodedMembership {
  const id = headerString(message.headers, "id");
  if (!id) return { ok: false, errors: ["no id header"] };
  if (!message.value) return { ok: false, errors: ["empty value"] };
  let value: unknown;
  try {
    value = decodeFramedJson(message.value).value;
  } catch (error) {
    return { ok: false, errors: [`not JSON: ${(error as Error).message}`] };
  }
  const checked = validate(value);
  if (!checked.ok) return { ok: false, errors: checked.errors };
  return {
    ok: true,
    change: {
      id,
      type: headerString(message.headers, "type") ?? `segment.${checked.value.change}`,
      businessId: headerString(message.headers, "business_id") ?? checked.value.business_id,
      contactId: message.key?.toString() ?? checked.value.contact_id,
      value: checked.value,
      partition,
      offset: message.offset,
      timestamp: message.timestamp,
    },
  };
}
