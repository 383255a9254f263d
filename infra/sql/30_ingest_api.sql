-- What ingest-api calls in Postgres besides its tenant-scoped statements: definer functions for the questions that
-- cross tenants, each revealing only what the caller needs. Repeatable (see infra/sql/10_tenant_isolation.sql).

-- Who may write for which business is asked before any tenant is known: the ids of a user's businesses, and the
-- business of an ingest key hash.
CREATE OR REPLACE FUNCTION app.user_businesses(p_user uuid)
RETURNS TABLE (business_id uuid, plan text, default_country text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT b.id, b.plan, b.default_country::text FROM businesses b
  WHERE b.owner_id = p_user
     OR EXISTS (SELECT 1 FROM business_team t WHERE t.business_id = b.id AND t.user_id = p_user)
$$;
REVOKE ALL ON FUNCTION app.user_businesses(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.user_businesses(uuid) TO crm_service;

CREATE OR REPLACE FUNCTION app.ingest_key_business(p_key_hash text)
RETURNS TABLE (key_id uuid, business_id uuid, plan text, default_country text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT k.id, k.business_id, b.plan, b.default_country::text FROM ingest_keys k JOIN businesses b ON b.id = k.business_id
  WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION app.ingest_key_business(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.ingest_key_business(text) TO crm_service;

-- Pruning of idempotency records crosses tenants; it never deletes anything younger than 24 h (SPEC 4).
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

-- Records this instance as alive in its deployment group, forgets instances silent for longer than p_ttl, and
-- returns how many instances of the group are live (each enforces 1/N of every rate limit).
CREATE OR REPLACE FUNCTION app.ingest_instance_heartbeat(p_instance text, p_group text, p_ttl interval)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE v_live int;
BEGIN
  INSERT INTO app.ingest_instances (instance_id, instance_group, seen_at) VALUES (p_instance, p_group, now())
  ON CONFLICT (instance_id) DO UPDATE SET seen_at = now(), instance_group = EXCLUDED.instance_group;
  DELETE FROM app.ingest_instances WHERE seen_at < now() - p_ttl;
  SELECT count(*)::int INTO v_live FROM app.ingest_instances WHERE instance_group = p_group;
  RETURN v_live;
END $$;
REVOKE ALL ON FUNCTION app.ingest_instance_heartbeat(text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.ingest_instance_heartbeat(text, text, interval) TO crm_service;

CREATE OR REPLACE FUNCTION app.ingest_instance_leave(p_instance text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  DELETE FROM app.ingest_instances WHERE instance_id = p_instance
$$;
REVOKE ALL ON FUNCTION app.ingest_instance_leave(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.ingest_instance_leave(text) TO crm_service;
