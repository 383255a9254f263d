import contactUpdatedV1 from "../contact.updated.v1.json" with { type: "json" };
import eventsAppliedV1 from "../events.applied.v1.json" with { type: "json" };
import eventsRawV1 from "../events.raw.v1.json" with { type: "json" };
import segmentDefinitionV1 from "../segment-definition.v1.json" with { type: "json" };
import type { ContactUpdatedV1, EventsRawV1, SegmentDefinitionV1 } from "./types.generated.ts";

/** The published JSON Schemas, by topic; registered as `<topic>-value`. */
export const TOPIC_SCHEMAS = {
  "events.raw.v1": eventsRawV1,
  "contact.updated.v1": contactUpdatedV1,
  "events.applied.v1": eventsAppliedV1,
} as const;

/** JSON Schemas of documents that are not topic values (stored or sent to an API); types generated the same way. */
export const DOCUMENT_SCHEMAS = {
  "segment-definition.v1": segmentDefinitionV1,
} as const;

/** The rule of a segment (issue 16), as stored in `segment_definitions.definition`. */
export type { SegmentDefinitionV1 };

// The value types are derived from the JSON Schemas above (types.generated.ts, checked by types.test.ts), never
// written by hand: a change of a schema changes the types, and tsc shows every place it touches.
/** The value of an `events.raw.v1` message. */
export type RawEventV1 = EventsRawV1;
/** The value of a `contact.updated.v1` message. */
export type { ContactUpdatedV1 };

type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];

/** Each field of `T`, marked as the TypeScript type declares it; used to check the JSON Schema against it. */
export type FieldMap<T> = { [K in keyof T]-?: K extends RequiredKeys<T> ? "required" : "optional" };

// Field by field, what a consumer may rely on being present: tsc fails when a type (so its schema) gains, loses or
// changes the optionality of a field without the map following, and schemas.test.ts fails when the JSON Schema
// disagrees with the map. A change here is a change of the contract: see removedGuarantees in @crm/schema-registry.
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
  anonymous_ids: "optional",
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
  traits: "optional",
} as const satisfies FieldMap<ContactUpdatedV1["contact"]>;
