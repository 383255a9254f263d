-- Instances are counted per deployment group, so unrelated API processes that share one database (tests, a
-- canary) do not shrink each other's share of the rate limits.
ALTER TABLE app.ingest_instances ADD COLUMN IF NOT EXISTS instance_group text NOT NULL DEFAULT 'default';

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

DROP FUNCTION IF EXISTS app.ingest_instance_heartbeat(text, interval);
REVOKE ALL ON FUNCTION app.ingest_instance_heartbeat(text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.ingest_instance_heartbeat(text, text, interval) TO crm_service;
