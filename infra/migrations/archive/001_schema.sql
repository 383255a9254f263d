-- Core data model of SPEC section 6. Tables live in `public`; functions in `app`.
CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE IF NOT EXISTS businesses (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name            text NOT NULL,
  owner_id        uuid NOT NULL,
  plan            text NOT NULL DEFAULT 'standard',
  default_country char(2) NOT NULL DEFAULT 'US',
  -- identifier values that are kept on events but never link identities (SPEC 7.1), per business
  junk_values     text[] NOT NULL DEFAULT ARRAY['null','undefined','anonymous','0','guest','none','unknown','n/a','test'],
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS businesses_owner_idx ON businesses (owner_id);

CREATE TABLE IF NOT EXISTS business_team (
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL,
  role        text NOT NULL DEFAULT 'member',
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (business_id, user_id)
);
CREATE INDEX IF NOT EXISTS business_team_user_idx ON business_team (user_id);

CREATE TABLE IF NOT EXISTS ingest_keys (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  key_hash    text NOT NULL UNIQUE,
  label       text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);

CREATE TABLE IF NOT EXISTS crm_contacts (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id   uuid NOT NULL REFERENCES businesses (id),
  external_id   text,
  email         text,
  phone         text,
  name          text,
  -- occurred_at of the event that set `name`: a late event never overwrites newer data (SPEC 7.4)
  name_at       timestamptz,
  version       bigint NOT NULL DEFAULT 1,
  merged_into   uuid REFERENCES crm_contacts (id),
  first_seen_at timestamptz NOT NULL,
  last_seen_at  timestamptz NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS crm_contacts_business_idx ON crm_contacts (business_id);
CREATE INDEX IF NOT EXISTS crm_contacts_email_idx ON crm_contacts (business_id, email);

CREATE TABLE IF NOT EXISTS contact_identities (
  business_id uuid NOT NULL,
  type        text NOT NULL CHECK (type IN ('external_id', 'email', 'phone')),
  value       text NOT NULL,
  contact_id  uuid NOT NULL REFERENCES crm_contacts (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT contact_identities_unique UNIQUE (business_id, type, value),
  CONSTRAINT contact_identities_phone_e164 CHECK (type <> 'phone' OR value ~ '^\+[1-9][0-9]{6,14}$'),
  CONSTRAINT contact_identities_value_length CHECK (length(value) BETWEEN 1 AND 320)
);
CREATE INDEX IF NOT EXISTS contact_identities_contact_idx ON contact_identities (contact_id);

CREATE TABLE IF NOT EXISTS crm_events (
  id          uuid PRIMARY KEY,
  business_id uuid NOT NULL,
  contact_id  uuid NOT NULL REFERENCES crm_contacts (id),
  type        text NOT NULL,
  props       jsonb NOT NULL DEFAULT '{}',
  -- the identifiers the event carried, normalized, junk values included (they are kept, never linked)
  contact     jsonb NOT NULL DEFAULT '{}',
  occurred_at timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS crm_events_contact_idx ON crm_events (contact_id);

-- Two different external_ids that an event tried to join on one contact (SPEC 7.3): kept, never applied.
CREATE TABLE IF NOT EXISTS identity_conflicts (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  business_id    uuid NOT NULL,
  event_id       uuid NOT NULL,
  contact_id     uuid NOT NULL,
  other_contact  uuid,
  type           text NOT NULL,
  value          text NOT NULL,
  reason         text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- Debezium's default outbox columns; streamed to contact.updated.v1 by the Outbox Event Router.
CREATE TABLE IF NOT EXISTS outbox (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregatetype text NOT NULL,
  aggregateid   text NOT NULL,
  type          text NOT NULL,
  payload       jsonb NOT NULL,
  business_id   uuid NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_created_idx ON outbox (created_at);

-- Written by Debezium's heartbeat.action.query so an idle slot keeps advancing.
CREATE TABLE IF NOT EXISTS app.debezium_heartbeat (
  id int PRIMARY KEY,
  ts timestamptz NOT NULL
);
