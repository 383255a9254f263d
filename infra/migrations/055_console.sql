-- Ops console (issue 19): what was done through it. A PII reveal, a dead letter replayed or discarded: who, when,
-- what. The console's role reaches this table only through the definer functions of infra/sql/55_console.sql
-- (record and read), so no console bug can rewrite or delete the trail.
CREATE TABLE console_audit (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  -- 'operator' (the stack's operator credential) or 'user:<uuid>' (a business owner or team member's JWT)
  actor       text NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 64),
  action      text NOT NULL CHECK (action IN ('reveal', 'dlq_replay', 'dlq_discard')),
  -- the business the action touched; null for a dead letter whose business cannot be read (undecodable bytes)
  business_id uuid REFERENCES businesses (id) ON DELETE CASCADE,
  -- the contact whose value was revealed; erasing the contact (issue 18) keeps the trail but forgets whose it was
  contact_id  uuid REFERENCES crm_contacts (id) ON DELETE SET NULL,
  -- what: 'reveal:email' (the contact is contact_id), 'dlq:<topic>:<partition>:<offset>'; never a revealed value
  target      text NOT NULL CHECK (char_length(target) BETWEEN 1 AND 300),
  detail      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object')
);
CREATE INDEX console_audit_target_idx ON console_audit (target, at DESC);
CREATE INDEX console_audit_at_idx ON console_audit (at DESC);
CREATE INDEX console_audit_contact_idx ON console_audit (contact_id);
ALTER TABLE console_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_audit FORCE ROW LEVEL SECURITY;
