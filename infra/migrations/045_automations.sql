-- Automations (issue 17): endpoints, triggers, logical messages, their deliveries to each endpoint and every
-- attempt. Policies and functions: infra/sql/45_automations.sql. A table holding a contact id references
-- crm_contacts ON DELETE CASCADE, so erasing a contact (issue 18) removes its messages, deliveries and attempts.
CREATE TABLE automation_endpoints (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id   uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  url           text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
  description   text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
  -- trigger kinds (webhook event types) this endpoint receives; NULL = every type
  event_types   text[],
  -- the whsec_ secret, AES-256-GCM under the deployment's AUTOMATIONS_SECRET_KEY (never stored in clear)
  secret_sealed text NOT NULL,
  -- during a rotation the old secret signs too, until previous_expires_at
  previous_sealed     text,
  previous_expires_at timestamptz,
  enabled       boolean NOT NULL DEFAULT true,
  -- why it was disabled: 'manual', 'gone' (a 410), 'failing' (failing for too long)
  disabled_reason text,
  disabled_at   timestamptz,
  -- first failed attempt since the last success; an endpoint failing for AUTOMATIONS_DISABLE_AFTER is disabled
  failing_since timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (business_id, id)
);
CREATE INDEX automation_endpoints_business_idx ON automation_endpoints (business_id, created_at);

CREATE TABLE automation_triggers (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id   uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
  -- contact.created | contact.changed | contact.merged | segment.entered | segment.exited | event
  kind          text NOT NULL,
  -- the kind's parameters: {field, to?} for contact.changed, {segment_id} for segments, {type, where?} for event
  params        jsonb NOT NULL DEFAULT '{}',
  -- segment contact conditions (all/any/not/contact) the contact must pass when the trigger fires
  contact_filter jsonb,
  once_per_contact boolean NOT NULL DEFAULT false,
  delay_seconds integer NOT NULL DEFAULT 0 CHECK (delay_seconds BETWEEN 0 AND 2592000),
  enabled       boolean NOT NULL DEFAULT true,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (business_id, id)
);
CREATE INDEX automation_triggers_match_idx ON automation_triggers (business_id, kind) WHERE enabled;

-- One logical message: a trigger fired for a contact by one cause. The id is deterministic (trigger, cause), so a
-- redelivered Kafka message or a restarted consumer finds it already there; it is the webhook-id of every attempt.
CREATE TABLE automation_messages (
  id          uuid PRIMARY KEY,
  business_id uuid NOT NULL,
  trigger_id  uuid NOT NULL,
  contact_id  uuid NOT NULL REFERENCES crm_contacts (id) ON DELETE CASCADE,
  event_type  text NOT NULL,
  -- what caused it: the outbox id, the membership change or the event id
  cause_id    text NOT NULL,
  payload     jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (business_id, id),
  FOREIGN KEY (business_id, trigger_id) REFERENCES automation_triggers (business_id, id) ON DELETE CASCADE
);
CREATE INDEX automation_messages_business_idx ON automation_messages (business_id, created_at);
CREATE INDEX automation_messages_contact_idx ON automation_messages (contact_id);

-- "Only once per contact": the first message of a trigger for a contact.
CREATE TABLE automation_trigger_contacts (
  business_id uuid NOT NULL,
  trigger_id  uuid NOT NULL,
  contact_id  uuid NOT NULL REFERENCES crm_contacts (id) ON DELETE CASCADE,
  message_id  uuid NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (trigger_id, contact_id),
  FOREIGN KEY (business_id, trigger_id) REFERENCES automation_triggers (business_id, id) ON DELETE CASCADE
);
CREATE INDEX automation_trigger_contacts_contact_idx ON automation_trigger_contacts (contact_id);

-- A message to one endpoint, attempted until success, exhaustion of the schedule, or the endpoint's end.
CREATE TABLE automation_deliveries (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id     uuid NOT NULL,
  message_id      uuid NOT NULL,
  endpoint_id     uuid NOT NULL,
  -- the delivery queue it belongs to: the consumer group of the instances that created it (AUTOMATIONS_GROUP_ID).
  -- Instances of one group share their queue; another group (a test's, the bench's) never takes its deliveries
  queue           text NOT NULL DEFAULT 'automations',
  -- pending (due at next_attempt_at) | succeeded | failed (schedule exhausted, 410, or endpoint disabled)
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
  -- index into the retry schedule of the next attempt (a replay starts it again)
  step            integer NOT NULL DEFAULT 0,
  attempts        integer NOT NULL DEFAULT 0,
  -- when the next attempt is due; a claimed attempt pushes it to the end of its lease, so the attempt of an
  -- instance that crashed is due again then
  next_attempt_at timestamptz,
  last_status_code integer,
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  UNIQUE (message_id, endpoint_id),
  FOREIGN KEY (business_id, message_id) REFERENCES automation_messages (business_id, id) ON DELETE CASCADE,
  FOREIGN KEY (business_id, endpoint_id) REFERENCES automation_endpoints (business_id, id) ON DELETE CASCADE
);
CREATE INDEX automation_deliveries_due_idx ON automation_deliveries (queue, next_attempt_at) WHERE status = 'pending';
CREATE INDEX automation_deliveries_business_idx ON automation_deliveries (business_id, created_at);
CREATE INDEX automation_deliveries_endpoint_idx ON automation_deliveries (endpoint_id, created_at);

CREATE TABLE automation_attempts (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  business_id   uuid NOT NULL,
  delivery_id   uuid NOT NULL REFERENCES automation_deliveries (id) ON DELETE CASCADE,
  attempt       integer NOT NULL,
  started_at    timestamptz NOT NULL,
  duration_ms   integer NOT NULL,
  -- succeeded | failed | timeout | refused (SSRF guard) | gone (410)
  outcome       text NOT NULL,
  status_code   integer,
  error         text,
  -- the first bytes of the answer, for the delivery log
  response_excerpt text,
  next_attempt_at timestamptz
);
CREATE INDEX automation_attempts_delivery_idx ON automation_attempts (delivery_id, attempt);

ALTER TABLE automation_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE automation_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE automation_triggers ENABLE ROW LEVEL SECURITY;
ALTER TABLE automation_triggers FORCE ROW LEVEL SECURITY;
ALTER TABLE automation_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE automation_messages FORCE ROW LEVEL SECURITY;
ALTER TABLE automation_trigger_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE automation_trigger_contacts FORCE ROW LEVEL SECURITY;
ALTER TABLE automation_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE automation_deliveries FORCE ROW LEVEL SECURITY;
ALTER TABLE automation_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE automation_attempts FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON automation_endpoints, automation_triggers TO crm_service;
GRANT SELECT, INSERT ON automation_messages, automation_trigger_contacts TO crm_service;
GRANT SELECT, INSERT, UPDATE ON automation_deliveries TO crm_service;
GRANT SELECT, INSERT ON automation_attempts TO crm_service;
