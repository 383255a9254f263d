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

-- The idempotency bookkeeping of many requests in ONE statement (SPEC 4; ingest-api's PgIdempotencyStore gathers
-- what concurrent requests ask while its previous calls run). p_groups holds one object per business and caller:
--   {"business_id", "caller", "done": [event ids], "released": [event ids],
--    "claims": [[event id, key hash, request hash], ...]}
-- where an event id is the key's deterministic event id (the record's primary key) and no event id is claimed twice.
-- Per group, under its business as tenant (SECURITY INVOKER: RLS applies as to any statement of the service), at
-- most four statements whatever the number of keys: the records of events Kafka acknowledged are marked done, the
-- claims whose send failed are forgotten, then the keys asked for are claimed: inserted in flight with a lease, or
-- taken over from an abandoned claim (lease over) with the same body; the records of the keys not claimed are read.
-- Records are inserted in event id order, so concurrent calls wait for each other in one order. Returns per claimed
-- event id either the record this call now holds (claimed) or the one it found (its body's hash, its state, the
-- seconds left of its lease; for a claimed one only its id); no row when another transaction claimed the key after
-- this statement began. No joins
-- over the JSON: each record is read once, whatever the planner estimates of its row counts.
-- A call that claims nothing (completions and releases, which the API sends after its answers) commits without
-- waiting for its WAL flush: losing it in a crash leaves durable claims in flight, which a client's retry takes over
-- when their lease ends, re-sending the same event id (the worker dedupes). A call that claims runs in the caller's
-- transaction, whose COMMIT waits for the WAL as usual (the API sends the event meanwhile and answers after both).
CREATE OR REPLACE FUNCTION app.apply_idempotency(p_groups jsonb, p_lease interval)
RETURNS TABLE (event_id uuid, record_hash text, record_state text, claimed boolean, retry_after int)
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_group jsonb;
BEGIN
  IF NOT jsonb_path_exists(p_groups, '$[*].claims[0]') THEN
    -- SET LOCAL: until this statement's transaction ends (the function's SET clause restores search_path only)
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  FOR v_group IN SELECT g FROM jsonb_array_elements(p_groups) AS g LOOP
    PERFORM set_config('app.business_id', v_group ->> 'business_id', true);
    IF jsonb_array_length(v_group -> 'done') > 0 THEN
      UPDATE idempotency_keys k SET state = 'done'
      WHERE k.event_id = ANY (ARRAY(SELECT jsonb_array_elements_text(v_group -> 'done'))::uuid[]);
    END IF;
    IF jsonb_array_length(v_group -> 'released') > 0 THEN
      DELETE FROM idempotency_keys k
      WHERE k.event_id = ANY (ARRAY(SELECT jsonb_array_elements_text(v_group -> 'released'))::uuid[])
        AND k.state = 'in_flight';
    END IF;
    IF jsonb_array_length(v_group -> 'claims') > 0 THEN
      RETURN QUERY
      WITH taken AS (
        INSERT INTO idempotency_keys AS k (business_id, caller, key_hash, request_hash, event_id, state, lease_until)
        SELECT (v_group ->> 'business_id')::uuid, v_group ->> 'caller', c ->> 1, c ->> 2, (c ->> 0)::uuid,
               'in_flight', now() + p_lease
        FROM jsonb_array_elements(v_group -> 'claims') AS c
        ORDER BY (c ->> 0)::uuid
        ON CONFLICT (event_id) DO UPDATE SET lease_until = EXCLUDED.lease_until
          WHERE k.state = 'in_flight' AND k.lease_until < now() AND k.request_hash = EXCLUDED.request_hash
        RETURNING k.event_id, k.request_hash, k.state, k.lease_until
      )
      -- the caller knows what it claimed: no columns to send and parse but the id
      SELECT t.event_id, NULL::text, NULL::text, true, NULL::int
      FROM taken t
      UNION ALL
      -- the keys not claimed, as the statement found them (it does not see what it inserted itself)
      SELECT k.event_id, k.request_hash, k.state, false,
             GREATEST(1, ceil(extract(epoch FROM k.lease_until - now())))::int
      FROM idempotency_keys k
      WHERE k.event_id = ANY (ARRAY(
        SELECT (c ->> 0)::uuid FROM jsonb_array_elements(v_group -> 'claims') AS c
        EXCEPT ALL SELECT t.event_id FROM taken t));
    END IF;
  END LOOP;
END $$;
REVOKE ALL ON FUNCTION app.apply_idempotency(jsonb, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.apply_idempotency(jsonb, interval) TO crm_service;

-- Pruning of idempotency records crosses tenants; it never deletes anything younger than 24 h (SPEC 4).
CREATE OR REPLACE FUNCTION app.prune_idempotency_keys(p_retention interval, p_limit int DEFAULT 10000)
RETURNS int
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH deleted AS (
    DELETE FROM idempotency_keys
    WHERE event_id IN (
      SELECT event_id FROM idempotency_keys
      WHERE created_at < now() - GREATEST(p_retention, interval '24 hours')
      LIMIT p_limit)
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
