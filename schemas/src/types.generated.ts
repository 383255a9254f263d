// Generated from schemas/*.json by schemas/src/generate-types.ts (npm run generate -w @crm/schemas): do not edit.
// The JSON Schemas are the contract; types.test.ts fails when this file no longer matches them.

/**
 * A tracked event accepted by ingest-api, before identity resolution. Key: business_id:kind:normalized identifier.
 */
export interface EventsRawV1 {
  /**
   * Deterministic for keyed requests; the resolver dedupes on it.
   */
  event_id: string;
  business_id: string;
  type: string;
  /**
   * Identifiers, already normalized (email NFKC lowercase, phone E.164).
   */
  contact: {
    external_id?: string;
    email?: string;
    phone?: string;
    name?: string;
    /**
     * A device or browser id (Segment's anonymousId); the lowest-priority identifier. Links a contact only while it is anonymous: two identified contacts are never merged through it.
     */
    anonymous_id?: string;
    /**
     * Alias (Segment's previousId): the contact known by this id (an anonymous_id, else an external_id) is the same person as this event's contact, and is merged into it even when both are identified (never two external_ids on one contact).
     */
    previous_id?: string;
    /**
     * Profile traits, latest occurred_at wins per key. At most 200 keys and 16 KiB as compact JSON (the byte bound is checked in code: JSON Schema cannot express it).
     */
    traits?: {
      [k: string]: unknown;
    };
  };
  props: {
    [k: string]: unknown;
  };
  occurred_at: string;
  received_at: string;
  source: {
    kind: "user" | "ingest_key";
    /**
     * Keyed hash of the caller id; never the raw id.
     */
    id_hash: string;
  };
}

/**
 * One committed change of a contact, from the transactional outbox via Debezium. Key: contact_id. Headers: id (outbox id, dedupe on it), type, business_id. Objects are closed (additionalProperties false) so that a new optional field is BACKWARD compatible in the registry; readers ignore fields they do not know.
 */
export interface ContactUpdatedV1 {
  contact_id: string;
  business_id: string;
  /**
   * Increases with every change of the contact.
   */
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
    /**
     * Profile traits (latest occurred_at wins per key); absent when the contact has none. A changed trait is named in changed_fields as traits.<key>.
     */
    traits?: {
      [k: string]: unknown;
    };
  };
  identities: {
    type: "external_id" | "email" | "phone";
    value: string;
  }[];
  /**
   * The contact's identities of type anonymous_id, sorted; absent when it has none. Kept out of identities, whose type enum readers of the first version check.
   */
  anonymous_ids?: string[];
  merged_from?: string[];
  merged_into?: string;
  cause_event_id: string;
  occurred_at: string;
}

/**
 * One event as the resolver worker stored it (a row inserted into crm_events), streamed by Debezium from the same replication slot as the outbox, so every applied event appears once per insert, in commit order per contact. Key: the contact_id the event was applied to. Value: the event's props, as sent (an object). Headers: id (the event id: dedupe on it), type, business_id, occurred_at (ISO 8601). Internal to the pipeline (the segments and automations services read it); it holds what producers sent, so it has the retention of events.raw.v1.
 */
export interface EventsAppliedV1 {
  [k: string]: unknown;
}

/**
 * A test of one contact field or trait. exists takes no value; before/after take an ISO 8601 date-time; within_last_days an integer number of days.
 */
export type ContactCondition = ValueOfOp & {
  field: ContactField;
  op:
    | "="
    | "!="
    | "<"
    | "<="
    | ">"
    | ">="
    | "contains"
    | "starts_with"
    | "in"
    | "exists"
    | "before"
    | "after"
    | "within_last_days";
  value?: unknown;
};
/**
 * The value each operator takes.
 */
export type ValueOfOp = {
  [k: string]: unknown;
};
/**
 * A column of the contact (external_id, email, phone, name, first_seen_at, last_seen_at), or one of its traits as traits.<key>.
 */
export type ContactField = string;
export type EventType = string;
/**
 * Property filters, all of which an event must pass to count.
 *
 * @maxItems 20
 */
export type Where =
  | []
  | [PropertyFilter]
  | [PropertyFilter, PropertyFilter]
  | [PropertyFilter, PropertyFilter, PropertyFilter]
  | [PropertyFilter, PropertyFilter, PropertyFilter, PropertyFilter]
  | [PropertyFilter, PropertyFilter, PropertyFilter, PropertyFilter, PropertyFilter]
  | [PropertyFilter, PropertyFilter, PropertyFilter, PropertyFilter, PropertyFilter, PropertyFilter]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ]
  | [
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
      PropertyFilter,
    ];
/**
 * A test of one top-level key of the event's props, with the operators of contact conditions except the date ones.
 */
export type PropertyFilter = ValueOfOp & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
} & {
  property: string;
  op: "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts_with" | "in" | "exists";
  value?: unknown;
};
/**
 * The last N days (now - N days .. now), or between from_days_ago and to_days_ago days ago (from_days_ago > to_days_ago).
 */
export type Window =
  | {
      last_days: Days;
    }
  | {
      from_days_ago: Days;
      to_days_ago: number;
    };
export type Days = number;
export type Comparison = "=" | "!=" | "<" | "<=" | ">" | ">=";

/**
 * The rule of a segment (issue 16): one condition, combined with all/any/not. Each condition object has exactly one key, which names its kind. Limits a schema cannot state (depth, size, cycles, references to existing segments of the same business) are checked by @crm/segment-definitions.
 */
export interface SegmentDefinitionV1 {
  /**
   * True when every condition is true.
   *
   * @minItems 1
   * @maxItems 50
   */
  all?: [Condition, ...Condition[]];
  /**
   * True when at least one condition is true.
   *
   * @minItems 1
   * @maxItems 50
   */
  any?: [Condition, ...Condition[]];
  not?: Condition1;
  contact?: ContactCondition;
  event?: EventCondition;
  no_event?: NoEventCondition;
  /**
   * Membership of another active segment of the same business, by id (no cycles).
   */
  segment?: string;
}
export interface Condition {
  /**
   * True when every condition is true.
   *
   * @minItems 1
   * @maxItems 50
   */
  all?: [Condition, ...Condition[]];
  /**
   * True when at least one condition is true.
   *
   * @minItems 1
   * @maxItems 50
   */
  any?: [Condition, ...Condition[]];
  not?: Condition1;
  contact?: ContactCondition;
  event?: EventCondition;
  no_event?: NoEventCondition;
  /**
   * Membership of another active segment of the same business, by id (no cycles).
   */
  segment?: string;
}
/**
 * True when the condition is false.
 */
export interface Condition1 {
  /**
   * True when every condition is true.
   *
   * @minItems 1
   * @maxItems 50
   */
  all?: [Condition, ...Condition[]];
  /**
   * True when at least one condition is true.
   *
   * @minItems 1
   * @maxItems 50
   */
  any?: [Condition, ...Condition[]];
  not?: Condition1;
  contact?: ContactCondition;
  event?: EventCondition;
  no_event?: NoEventCondition;
  /**
   * Membership of another active segment of the same business, by id (no cycles).
   */
  segment?: string;
}
/**
 * count of the matching events in the window, or sum/min/max/avg of a numeric property over them (events whose property is not a number are left out), compared to value.
 */
export interface EventCondition {
  type: EventType;
  where?: Where;
  window: Window;
  measure: "count" | "sum" | "min" | "max" | "avg";
  property?: string;
  op: Comparison;
  value: number;
}
/**
 * True when the contact has no matching event of this type in the last N days (at-risk).
 */
export interface NoEventCondition {
  type: EventType;
  where?: Where;
  last_days: Days;
}
