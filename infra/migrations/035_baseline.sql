-- The schema of a new database (SPEC 6): what migrations 001-035 (archive/) built, as one file, without the
-- functions and policies, which live in infra/sql/ and are applied after the versioned migrations. A database
-- migrated by the archived files already has this schema: the runner records this file for it without running it.
-- Plain CREATE statements on purpose: run against a database that already has the tables, it fails and, being one
-- transaction with the rest of the run, changes nothing.
--
-- Tables live in `public`; functions in `app`. Every tenant table has Row Level Security enabled and FORCED here,
-- next to its definition, so that until its policies exist (infra/sql/10_tenant_isolation.sql) it shows no row to
-- the services (fail closed). The services' role owns nothing and gets only the grants below.
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA public, app TO crm_service, crm_debezium;

CREATE TABLE businesses (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name            text NOT NULL,
  owner_id        uuid NOT NULL,
  plan            text NOT NULL DEFAULT 'standard',
  default_country char(2) NOT NULL DEFAULT 'US',
  -- identifier values that are kept on events but never link identities (SPEC 7.1), per business; compared
  -- NFKC-normalized and lowercased (infra/sql/20_resolve_contact.sql)
  junk_values     text[] NOT NULL DEFAULT ARRAY['null','undefined','anonymous','0','guest','none','unknown','n/a','test'],
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX businesses_owner_idx ON businesses (owner_id);
ALTER TABLE businesses ENABLE ROW LEVEL SECURITY;
ALTER TABLE businesses FORCE ROW LEVEL SECURITY;
GRANT SELECT ON businesses TO crm_service;

CREATE TABLE business_team (
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL,
  role        text NOT NULL DEFAULT 'member',
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (business_id, user_id)
);
CREATE INDEX business_team_user_idx ON business_team (user_id);
ALTER TABLE business_team ENABLE ROW LEVEL SECURITY;
ALTER TABLE business_team FORCE ROW LEVEL SECURITY;
GRANT SELECT ON business_team TO crm_service;

CREATE TABLE ingest_keys (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  key_hash    text NOT NULL UNIQUE,
  label       text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
ALTER TABLE ingest_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE ingest_keys FORCE ROW LEVEL SECURITY;
GRANT SELECT ON ingest_keys TO crm_service;

-- No index led by business_id on crm_contacts or crm_events (measured in archived 033-035): RLS adds
-- `business_id = app.current_business()` to every statement, the planner estimates it with the tenant current when
-- plpgsql cached the plan, and a plan cached under a small tenant then read a large tenant's rows through such an
-- index (thousands of index tuples per statement). The resolve path reads contacts and events by primary key and
-- by contact_id only; tenant-wide reads are for tools and tests, which can afford a scan.
CREATE TABLE crm_contacts (
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
ALTER TABLE crm_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_contacts FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON crm_contacts TO crm_service;

CREATE TABLE contact_identities (
  business_id uuid NOT NULL,
  type        text NOT NULL CHECK (type IN ('external_id', 'email', 'phone')),
  value       text NOT NULL,
  contact_id  uuid NOT NULL REFERENCES crm_contacts (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT contact_identities_unique UNIQUE (business_id, type, value),
  CONSTRAINT contact_identities_phone_e164 CHECK (type <> 'phone' OR value ~ '^\+[1-9][0-9]{6,14}$'),
  CONSTRAINT contact_identities_value_length CHECK (length(value) BETWEEN 1 AND 320)
);
CREATE INDEX contact_identities_contact_idx ON contact_identities (contact_id);
ALTER TABLE contact_identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_identities FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON contact_identities TO crm_service;

CREATE TABLE crm_events (
  id          uuid PRIMARY KEY,
  business_id uuid NOT NULL,
  contact_id  uuid NOT NULL REFERENCES crm_contacts (id),
  type        text NOT NULL,
  props       jsonb NOT NULL DEFAULT '{}',
  -- the identifiers the event carried, as received, junk values included (they are kept, never linked)
  contact     jsonb NOT NULL DEFAULT '{}',
  occurred_at timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_events_contact_idx ON crm_events (contact_id);
ALTER TABLE crm_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_events FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON crm_events TO crm_service;

-- Two different external_ids that an event tried to join on one contact (SPEC 7.3): kept, never applied.
CREATE TABLE identity_conflicts (
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
ALTER TABLE identity_conflicts ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity_conflicts FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON identity_conflicts TO crm_service;

-- Debezium's default outbox columns; streamed to contact.updated.v1 by the Outbox Event Router (SPEC 8).
CREATE TABLE outbox (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregatetype text NOT NULL,
  aggregateid   text NOT NULL,
  type          text NOT NULL,
  payload       jsonb NOT NULL,
  business_id   uuid NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  -- the inserting transaction, as a 64-bit id comparable with pg_snapshot_xmin (xmin wraps; xid8 does not);
  -- pruning uses it with app.outbox_prune_marks below
  txid          xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX outbox_created_idx ON outbox (created_at);
CREATE INDEX outbox_txid_idx ON outbox (txid);
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, DELETE ON outbox TO crm_service;
-- Debezium reads the outbox through logical decoding (not subject to RLS) and, only on a snapshot, by SELECT.
GRANT SELECT ON outbox TO crm_debezium;

-- Outbox pruning that never deletes a row Debezium has not streamed (SPEC 8).
-- A row is streamed once the slot's confirmed_flush_lsn is past the commit record of the transaction that
-- inserted it. Rows do not carry their commit LSN, so the pruner records marks: the oldest transaction still
-- running (xmin of a fresh snapshot) and, read after it, the current WAL insert position. Every transaction older
-- than that xmin had finished, so its commit record lies before the LSN; once the slot has confirmed the LSN,
-- every outbox row written by such a transaction is in Kafka and may go. `created_at` (the transaction's start
-- time) could not prove this: a transaction can start early and commit long after.
CREATE TABLE app.outbox_prune_marks (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- transactions with a smaller id had all ended when the mark was taken
  oldest_running xid8 NOT NULL,
  -- WAL insert position read after oldest_running: every such transaction committed before it
  lsn            pg_lsn NOT NULL,
  taken_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_prune_marks_lsn_idx ON app.outbox_prune_marks (lsn);

-- Written by Debezium's heartbeat.action.query so an idle slot keeps advancing.
CREATE TABLE app.debezium_heartbeat (
  id int PRIMARY KEY,
  ts timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON app.debezium_heartbeat TO crm_debezium;

-- The filtered publication Debezium streams (publication.autocreate.mode=disabled in the connector config):
-- inserts only for the outbox, as pruning (DELETE) must never reach consumers; updates for the heartbeat upsert.
CREATE PUBLICATION crm_outbox FOR TABLE public.outbox, app.debezium_heartbeat WITH (publish = 'insert, update');

-- Idempotency records of the ingest API (SPEC 4): scope (business, caller, key), kept at least 24 h.
-- The key itself is stored as a SHA-256 hash: clients put order numbers and the like in it (SPEC 9.6).
CREATE TABLE idempotency_keys (
  business_id  uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  -- 'user:<uuid>' or 'ingest_key:<key id>'
  caller       text NOT NULL,
  key_hash     text NOT NULL,
  -- SHA-256 of the canonical JSON of the request body: same key + other body is 422
  request_hash text NOT NULL,
  -- deterministic (UUIDv5 of the scope), so a retry after a crash produces the same id and the worker dedupes
  event_id     uuid NOT NULL,
  state        text NOT NULL CHECK (state IN ('in_flight', 'done')),
  -- an in-flight claim older than this was abandoned (API crash): a retry may take it over
  lease_until  timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (business_id, caller, key_hash)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO crm_service;

-- Live ingest-api instances. Each enforces its share (1/N) of every caller's rate limit, N read from here, so the
-- limits hold across instances behind a load balancer without a shared counter on the hot path. Counted per
-- deployment group, so unrelated API processes that share one database (tests, a canary) do not shrink each
-- other's share. Written only through definer functions (infra/sql/30_ingest_api.sql).
CREATE UNLOGGED TABLE app.ingest_instances (
  instance_id    text PRIMARY KEY,
  seen_at        timestamptz NOT NULL DEFAULT now(),
  instance_group text NOT NULL DEFAULT 'default'
);
