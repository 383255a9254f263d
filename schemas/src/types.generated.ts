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
