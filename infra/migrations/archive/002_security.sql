-- Tenant isolation (SPEC 6): RLS enabled and FORCED on every tenant table; the service role owns nothing and has
-- neither SUPERUSER nor BYPASSRLS (the migration runner creates crm_service and crm_debezium before this file).
-- The tenant is a transaction-local setting; a transaction that set none sees no rows (fail closed).

CREATE OR REPLACE FUNCTION app.current_business() RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT NULLIF(current_setting('app.business_id', true), '')::uuid $$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['crm_contacts','contact_identities','crm_events','outbox','identity_conflicts',
                           'ingest_keys','business_team']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (business_id = app.current_business())'
                   ' WITH CHECK (business_id = app.current_business())', t);
  END LOOP;
END $$;

ALTER TABLE businesses ENABLE ROW LEVEL SECURITY;
ALTER TABLE businesses FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON businesses;
CREATE POLICY tenant_isolation ON businesses USING (id = app.current_business());

-- Debezium reads the outbox through logical decoding (not subject to RLS) and, only on a snapshot, by SELECT.
DROP POLICY IF EXISTS debezium_read ON outbox;
CREATE POLICY debezium_read ON outbox FOR SELECT TO crm_debezium USING (true);

GRANT USAGE ON SCHEMA public, app TO crm_service;
GRANT SELECT ON businesses, business_team, ingest_keys TO crm_service;
GRANT SELECT, INSERT, UPDATE ON crm_contacts, contact_identities, crm_events, identity_conflicts TO crm_service;
GRANT SELECT, INSERT, DELETE ON outbox TO crm_service;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app TO crm_service;

GRANT USAGE ON SCHEMA public, app TO crm_debezium;
GRANT SELECT ON outbox TO crm_debezium;
GRANT SELECT, INSERT, UPDATE ON app.debezium_heartbeat TO crm_debezium;

-- Who may write for which business is asked before any tenant is known, so it is answered by definer functions
-- that reveal only what the caller needs (the ids of a user's businesses; the business of a key hash).
CREATE OR REPLACE FUNCTION app.user_businesses(p_user uuid)
RETURNS TABLE (business_id uuid, plan text, default_country text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT b.id, b.plan, b.default_country::text FROM businesses b
  WHERE b.owner_id = p_user
     OR EXISTS (SELECT 1 FROM business_team t WHERE t.business_id = b.id AND t.user_id = p_user)
$$;

CREATE OR REPLACE FUNCTION app.ingest_key_business(p_key_hash text)
RETURNS TABLE (key_id uuid, business_id uuid, plan text, default_country text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT k.id, k.business_id, b.plan, b.default_country::text FROM ingest_keys k JOIN businesses b ON b.id = k.business_id
  WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
$$;

REVOKE ALL ON FUNCTION app.user_businesses(uuid), app.ingest_key_business(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.user_businesses(uuid), app.ingest_key_business(text) TO crm_service;

-- The filtered publication Debezium streams (publication.autocreate.mode=disabled in the connector config).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'crm_outbox') THEN
    -- inserts only for the outbox: pruning (DELETE) must never reach consumers; updates for the heartbeat upsert
    CREATE PUBLICATION crm_outbox FOR TABLE public.outbox, app.debezium_heartbeat WITH (publish = 'insert, update');
  END IF;
END $$;
