-- Idempotency records of the ingest API (SPEC 4): scope (business, caller, key), kept at least 24 h.
-- The key itself is stored as a SHA-256 hash: clients put order numbers and the like in it (SPEC 9.6).
CREATE TABLE IF NOT EXISTS idempotency_keys (
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
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON idempotency_keys;
CREATE POLICY tenant_isolation ON idempotency_keys USING (business_id = app.current_business())
  WITH CHECK (business_id = app.current_business());
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO crm_service;

-- Pruning crosses tenants, so it is a definer function; it never deletes anything younger than 24 h.
CREATE OR REPLACE FUNCTION app.prune_idempotency_keys(p_retention interval, p_limit int DEFAULT 10000)
RETURNS int
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH doomed AS (
    SELECT business_id, caller, key_hash FROM idempotency_keys
    WHERE created_at < now() - GREATEST(p_retention, interval '24 hours')
    LIMIT p_limit
  ), deleted AS (
    DELETE FROM idempotency_keys k USING doomed d
    WHERE k.business_id = d.business_id AND k.caller = d.caller AND k.key_hash = d.key_hash
    RETURNING 1
  )
  SELECT count(*)::int FROM deleted
$$;
REVOKE ALL ON FUNCTION app.prune_idempotency_keys(interval, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.prune_idempotency_keys(interval, int) TO crm_service;

-- Live ingest-api instances. Each enforces its share (1/N) of every caller's rate limit, N read from here, so the
-- limits hold across instances behind a load balancer without a shared counter on the hot path.
CREATE UNLOGGED TABLE IF NOT EXISTS app.ingest_instances (
  instance_id text PRIMARY KEY,
  seen_at     timestamptz NOT NULL DEFAULT now()
);

-- Records this instance as alive, forgets instances silent for longer than p_ttl, and returns how many are live.
CREATE OR REPLACE FUNCTION app.ingest_instance_heartbeat(p_instance text, p_ttl interval)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE v_live int;
BEGIN
  INSERT INTO app.ingest_instances (instance_id, seen_at) VALUES (p_instance, now())
  ON CONFLICT (instance_id) DO UPDATE SET seen_at = now();
  DELETE FROM app.ingest_instances WHERE seen_at < now() - p_ttl;
  SELECT count(*)::int INTO v_live FROM app.ingest_instances;
  RETURN v_live;
END $$;

CREATE OR REPLACE FUNCTION app.ingest_instance_leave(p_instance text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  DELETE FROM app.ingest_instances WHERE instance_id = p_instance
$$;

REVOKE ALL ON FUNCTION app.ingest_instance_heartbeat(text, interval), app.ingest_instance_leave(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.ingest_instance_heartbeat(text, interval), app.ingest_instance_leave(text)
  TO crm_service;
