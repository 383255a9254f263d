-- Messages the Segment-compatible listener refused one by one (issue 15): Segment answers 200 for a batch whose
-- messages fail validation, so a refused message must not be silently lost. Each is kept with its reason for the
-- business's operators (`npm run rejected-events`), counted per business, and pruned after a retention.
CREATE TABLE rejected_events (
  id          uuid PRIMARY KEY,
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  -- where it came in ('segment')
  source      text NOT NULL,
  -- the message's messageId as sent (control characters replaced), when it had one
  message_id  text,
  -- a bounded code (invalid_message, invalid_contact, traits_over_limit, forbidden_business, too_large, ...)
  reason_code text NOT NULL,
  -- what was wrong, by field path; never a field's value
  reason      text NOT NULL,
  -- the message as JSON text (escaped, so any input fits in text), cut at 32 KiB
  message     text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_events_business_received_idx ON rejected_events (business_id, received_at);
CREATE INDEX rejected_events_received_idx ON rejected_events (received_at);
ALTER TABLE rejected_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE rejected_events FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT ON rejected_events TO crm_service;
