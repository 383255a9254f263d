import contactUpdatedV1 from "../contact.updated.v1.json" with { type: "json" };
import eventsRawV1 from "../events.raw.v1.json" with { type: "json" };

/** The published JSON Schemas, by topic; registered as `<topic>-value`. */
export const TOPIC_SCHEMAS = {
  "events.raw.v1": eventsRawV1,
  "contact.updated.v1": contactUpdatedV1,
} as const;

/** The value of an `events.raw.v1` message (mirrors events.raw.v1.json). */
export interface RawEventV1 {
  event_id: string;
  business_id: string;
  type: string;
  contact: { external_id?: string; email?: string; phone?: string; name?: string };
  props: Record<string, unknown>;
  occurred_at: string;
  received_at: string;
  source: { kind: "user" | "ingest_key"; id_hash: string };
}

/** The value of a `contact.updated.v1` message (mirrors contact.updated.v1.json). */
export interface ContactUpdatedV1 {
  contact_id: string;
  business_id: string;
  version: number;
  change: "created" | "updated" | "merged" | "merged_away";
  changed_fields: string[];
  contact: {
    external_id?: string;
    email?: string;
    phone?: string;
    name?: string;
    first_seen_at?: string;
    last_seen_at?: string;
  };
  identities: { type: "external_id" | "email" | "phone"; value: string }[];
  merged_from?: string[];
  merged_into?: string;
  cause_event_id: string;
  occurred_at: string;
}
