-- Erasure and suppression (issue 18). Schema only; the functions are infra/sql/50_erasure.sql.

-- Identifiers of erased persons, kept only as keyed hashes: HMAC-SHA256 with the deployment's ERASURE_HASH_SECRET
-- (never stored in the database) of `business_id \n type \n normalized value` (@crm/identity suppressionHash).
-- The resolver-worker drops every event carrying one (infra/sql/50_erasure.sql, app.suppression_gate), so a
-- replay of events.raw.v1, a DLQ replay or a late event never brings the person back. Without the secret a dump
-- of this table cannot be checked against a list of candidate emails, and the same email hashes differently in
-- two businesses.
CREATE TABLE suppressed_identifiers (
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  -- lowercase hex, 64 characters
  hash        text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  -- the erasure that suppressed it (erasure_audit.id)
  erasure_id  uuid NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (business_id, hash)
);
ALTER TABLE suppressed_identifiers ENABLE ROW LEVEL SECURITY;
ALTER TABLE suppressed_identifiers FORCE ROW LEVEL SECURITY;
-- Written only by the definer functions (erase, lift); the services read it for listing.
GRANT SELECT ON suppressed_identifiers TO crm_service;

-- Every erasure and every suppression change: who, when, which business, how many rows. Never an identifier, a
-- hash or a contact id (the `erased` message on contact.updated.v1 carries this row's id as cause_event_id, which
-- ties the two together for whoever holds the message).
CREATE TABLE erasure_audit (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id  uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  action       text NOT NULL CHECK (action IN ('erase', 'lift_suppression')),
  -- 'user:<uuid>' (management API) or 'cli:<operator>' (npm run erasure)
  actor        text NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 200),
  -- what the request named: external_id, email, phone, anonymous_id or contact_id
  requested_by text NOT NULL CHECK (requested_by IN ('external_id', 'email', 'phone', 'anonymous_id', 'contact_id')),
  -- rows removed (erase) and suppression entries added (erase) or removed (lift)
  counts       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(counts) = 'object'),
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasure_audit_business_idx ON erasure_audit (business_id, created_at);
ALTER TABLE erasure_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_audit FORCE ROW LEVEL SECURITY;
GRANT SELECT ON erasure_audit TO crm_service;

-- An erasure deletes a contact and every contact merged into it: the merge tree is walked down by merged_into.
-- Partial, so the index holds merged-away contacts only (a merge writes one entry; other writes none).
CREATE INDEX crm_contacts_merged_into_idx ON crm_contacts (merged_into) WHERE merged_into IS NOT NULL;
