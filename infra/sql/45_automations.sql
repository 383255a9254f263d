-- Automations (issue 17, infra/migrations/045_automations.sql): tenant policies, and the delivery loop's claim
-- across businesses. Repeatable.

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['automation_endpoints','automation_triggers','automation_messages',
                           'automation_trigger_contacts','automation_deliveries','automation_attempts']
  LOOP
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (business_id = app.current_business())'
                   ' WITH CHECK (business_id = app.current_business())', t);
  END LOOP;
END $$;

-- The delivery loop's claim: due deliveries of its queue (its consumer group) to enabled endpoints, oldest first, at most p_per_endpoint per endpoint
-- and none of the endpoints in p_busy (those at their concurrency limit in the caller), so one slow endpoint's
-- backlog never fills a claim. Claimed rows are leased: their next_attempt_at moves to now() + p_lease, so an
-- instance that dies mid-attempt leaves them due again after the lease (at least once, same webhook-id).
-- SKIP LOCKED: instances claiming at once never take the same row. Across businesses, hence SECURITY DEFINER; the
-- outcome of each attempt is written back by the service in the delivery's own tenant.
CREATE OR REPLACE FUNCTION app.automation_claim_due(p_queue text, p_limit int, p_per_endpoint int, p_busy uuid[],
                                                    p_lease interval)
RETURNS TABLE (delivery_id uuid, business_id uuid, message_id uuid, endpoint_id uuid, attempt int, step int,
               url text, secret_sealed text, previous_sealed text, previous_expires_at timestamptz,
               event_type text, payload jsonb)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH due AS (
    SELECT d.id, d.endpoint_id, d.next_attempt_at
    FROM automation_deliveries d JOIN automation_endpoints e ON e.id = d.endpoint_id
    WHERE d.queue = p_queue AND d.status = 'pending' AND d.next_attempt_at <= now() AND e.enabled
      AND NOT (d.endpoint_id = ANY (coalesce(p_busy, '{}')))
    ORDER BY d.next_attempt_at
    LIMIT greatest(p_limit, 1) * 4
    FOR UPDATE OF d SKIP LOCKED
  ), picked AS (
    SELECT id FROM (
      SELECT due.id, due.next_attempt_at,
             row_number() OVER (PARTITION BY due.endpoint_id ORDER BY due.next_attempt_at) AS rn
      FROM due) ranked
    WHERE rn <= p_per_endpoint
    ORDER BY next_attempt_at
    LIMIT p_limit
  )
  UPDATE automation_deliveries d
  SET next_attempt_at = now() + p_lease
  FROM picked, automation_endpoints e, automation_messages m
  WHERE d.id = picked.id AND e.id = d.endpoint_id AND m.id = d.message_id
  RETURNING d.id, d.business_id, d.message_id, d.endpoint_id, d.attempts + 1, d.step, e.url, e.secret_sealed,
            e.previous_sealed, e.previous_expires_at, m.event_type, m.payload
$$;
REVOKE ALL ON FUNCTION app.automation_claim_due(text, int, int, uuid[], interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.automation_claim_due(text, int, int, uuid[], interval) TO crm_service;

-- The service's gauges across businesses: deliveries pending, the age of the oldest due one, disabled endpoints.
CREATE OR REPLACE FUNCTION app.automation_queue_stats()
RETURNS TABLE (pending bigint, oldest_due_seconds float8, disabled_endpoints bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT (SELECT count(*) FROM automation_deliveries WHERE status = 'pending'),
         (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
            FROM automation_deliveries WHERE status = 'pending' AND next_attempt_at <= now()),
         (SELECT count(*) FROM automation_endpoints WHERE NOT enabled)
$$;
REVOKE ALL ON FUNCTION app.automation_queue_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.automation_queue_stats() TO crm_service;
