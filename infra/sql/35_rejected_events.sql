-- Retention of the Segment listener's rejected messages (infra/migrations/038_rejected_events.sql). Repeatable.
-- Deletes at most p_limit rows older than p_retention across businesses (hence SECURITY DEFINER, as
-- app.prune_idempotency_keys); never younger than one day, whatever the caller asks.
CREATE OR REPLACE FUNCTION app.prune_rejected_events(p_retention interval, p_limit int DEFAULT 10000)
RETURNS int
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH deleted AS (
    DELETE FROM rejected_events
    WHERE id IN (
      SELECT id FROM rejected_events
      WHERE received_at < now() - GREATEST(p_retention, interval '1 day')
      LIMIT p_limit)
    RETURNING 1
  )
  SELECT count(*)::int FROM deleted
$$;
REVOKE ALL ON FUNCTION app.prune_rejected_events(interval, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.prune_rejected_events(interval, int) TO crm_service;
