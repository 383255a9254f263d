-- services/segments in Postgres (issue 16): tenant policies of its tables, the time reader of the rule language,
-- and the definer functions for its only cross-tenant questions (which segments need a job, which memberships are
-- due for the sweep), each answering ids only. Repeatable (see infra/sql/10_tenant_isolation.sql).

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['segment_memberships', 'segment_jobs', 'segment_outbox']
  LOOP
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (business_id = app.current_business())'
                   ' WITH CHECK (business_id = app.current_business())', t);
  END LOOP;
END $$;

-- Debezium reads segment_outbox through logical decoding (not subject to RLS) and, only on a snapshot, by SELECT.
DROP POLICY IF EXISTS debezium_read ON segment_outbox;
CREATE POLICY debezium_read ON segment_outbox FOR SELECT TO crm_debezium USING (true);

-- A JSON value as a time for the date operators of the rule language on traits: an ISO 8601 date or date-time
-- string (no zone = UTC), else NULL. Never an error (a trait is whatever a producer sent) and never a word Postgres
-- would read relative to the clock ('now', 'today', 'epoch'): the result depends on the value only.
CREATE OR REPLACE FUNCTION app.segment_time(p_value jsonb) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET timezone = 'UTC' AS $$
DECLARE v_text text;
BEGIN
  IF p_value IS NULL OR jsonb_typeof(p_value) <> 'string' THEN RETURN NULL; END IF;
  v_text := p_value #>> '{}';
  IF v_text !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?$' THEN
    RETURN NULL;
  END IF;
  RETURN v_text::timestamptz;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;
GRANT EXECUTE ON FUNCTION app.segment_time(jsonb) TO crm_service;

-- The segments service's lock of each contact: transaction advisory locks, taken in one order (the ids as text,
-- C collation) so two lockers never deadlock. Every evaluation takes them (services/segments/src/apply-results.ts),
-- and erasure (infra/sql/50_erasure.sql) before it deletes a contact's memberships: an evaluation in flight commits
-- first, a later one no longer finds the contact. Returns how many contacts it locked.
CREATE OR REPLACE FUNCTION app.lock_segment_contacts(p_contacts text[]) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
  SELECT count(pg_advisory_xact_lock(hashtextextended('segments:' || s.id, 0)))
  FROM (SELECT DISTINCT u.id COLLATE "C" AS id FROM unnest(p_contacts) AS u(id) ORDER BY 1) s
$$;
-- SECURITY INVOKER, and PUBLIC keeps EXECUTE (the default), so erasure's definer role can call it too (that role
-- is created later, in 90_ownership.sql).
GRANT EXECUTE ON FUNCTION app.lock_segment_contacts(text[]) TO crm_service;

-- Segments whose memberships are not at their current definition: no job yet, a job for an older version, or an
-- unfinished one. The service then works in the segment's business as tenant.
CREATE OR REPLACE FUNCTION app.segments_needing_jobs(p_limit int)
RETURNS TABLE (business_id uuid, segment_id uuid, version int, status text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT d.business_id, d.id, d.version, d.status FROM segment_definitions d
  LEFT JOIN segment_jobs j ON j.segment_id = d.id
  WHERE j.segment_id IS NULL OR j.version <> d.version OR j.done_at IS NULL
  ORDER BY d.updated_at LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION app.segments_needing_jobs(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.segments_needing_jobs(int) TO crm_service;

-- Memberships of active segments whose result may have changed with time alone (next_check_at passed), at most
-- p_per_business per business so one business's many due rows never hold back another's (an archived segment's
-- rows are its archive job's).
CREATE OR REPLACE FUNCTION app.segments_due(p_limit int, p_per_business int)
RETURNS TABLE (business_id uuid, segment_id uuid, contact_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT b.business_id, m.segment_id, m.contact_id
  FROM (SELECT DISTINCT business_id FROM segment_memberships WHERE next_check_at <= now()) b
  CROSS JOIN LATERAL (
    SELECT s.segment_id, s.contact_id FROM segment_memberships s
    JOIN segment_definitions d ON d.id = s.segment_id AND d.status = 'active'
    WHERE s.business_id = b.business_id AND s.next_check_at <= now()
    ORDER BY s.next_check_at LIMIT p_per_business
  ) m
  LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION app.segments_due(int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.segments_due(int, int) TO crm_service;
