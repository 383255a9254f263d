import { decodeFramedJson, headerString, type KafkaMessage } from "@crm/kafka";
import { topicValidator } from "@crm/schema-registry";
import type { TOPIC_SCHEMAS } from "@crm/schemas";

/** One message of an outbox topic, as handed to the callback. */
export interface OutboxChange<V> {
  /** The outbox id (header `id`): a change delivered twice carries the same id. */
  id: string;
  /** The change's type (header `type`), e.g. `contact.merged`, `segment.entered`. */
  type: string;
  businessId: string;
  contactId: string;
  value: V;
  partition: number;
  offset: string;
  /** When the message reached Kafka (ms since epoch, as a string, like kafkajs). */
  timestamp: string;
}

export type DecodedOutboxChange<V> = { ok: true; change: OutboxChange<V> } | { ok: false; errors: string[] };

/**
 * The decoder of one outbox topic (framed or plain JSON), validating against the topic's published schema. Never
 * throws: a message that does not match is a value the caller decides about. `typePrefix` names the change type
 * when a message has no `type` header (`<prefix>.<value.change>`).
 */
export function outboxDecoder<V extends { change: string; business_id: string; contact_id: string }>(
  topic: keyof typeof TOPIC_SCHEMAS,
  typePrefix: string,
): (partition: number, message: KafkaMessage) => DecodedOutboxChange<V> {
  // Tolerant: a field added by a newer schema version is dropped, not a reason to refuse the change.
  const validate = topicValidator<V>(topic, { tolerant: true });
  return (partition, message) => {
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
        type: headerString(message.headers, "type") ?? `${typePrefix}.${checked.value.change}`,
        businessId: headerString(message.headers, "business_id") ?? checked.value.business_id,
        contactId: message.key?.toString() ?? checked.value.contact_id,
        value: checked.value,
        partition,
        offset: message.offset,
        timestamp: message.timestamp,
      },
    };
  };
}
