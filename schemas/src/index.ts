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

type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];

/** Each field of `T`, marked as the TypeScript type declares it; used to check the JSON Schema against it. */
export type FieldMap<T> = { [K in keyof T]-?: K extends RequiredKeys<T> ? "required" : "optional" };

// These maps are how code and schema are kept from drifting apart: tsc fails when an interface gains, loses or
// changes the optionality of a field without the map following, and schemas.test.ts fails when the JSON Schema
// disagrees with the map.
export const RAW_EVENT_V1_FIELDS = {
  event_id: "required",
  business_id: "required",
  type: "required",
  contact: "required",
  props: "required",
  occurred_at: "required",
  received_at: "required",
  source: "required",
} as const satisfies FieldMap<RawEventV1>;

export const CONTACT_UPDATED_V1_FIELDS = {
  contact_id: "required",
  business_id: "required",
  version: "required",
  change: "required",
  changed_fields: "required",
  contact: "required",
  identities: "required",
  merged_from: "optional",
  merged_into: "optional",
  cause_event_id: "required",
  occurred_at: "required",
} as const satisfies FieldMap<ContactUpdatedV1>;

export const CONTACT_UPDATED_V1_CONTACT_FIELDS = {
  external_id: "optional",
  email: "optional",
  phone: "optional",
  name: "optional",
  first_seen_at: "optional",
  last_seen_at: "optional",
} as const satisfies FieldMap<ContactUpdatedV1["contact"]>;
