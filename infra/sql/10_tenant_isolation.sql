-- Tenant isolation (SPEC 6): the tenant of a transaction and the policies of every tenant table.
-- Repeatable: applied after the versioned migrations whenever this file changes (or a versioned migration ran), in
-- the same transaction; every statement can run again. Tables get ENABLE and FORCE ROW LEVEL SECURITY where they
-- are created (a versioned migration); a new tenant table gets its policy here.

-- The tenant is a transaction-local setting; a transaction that set none sees no rows (fail closed).
CREATE OR REPLACE FUNCTION app.current_business() RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT NULLIF(current_setting('app.business_id', true), '')::uuid $$;
-- PUBLIC keeps EXECUTE: policies run it as the querying role, crm_debezium's snapshot reads of the outbox included.
GRANT EXECUTE ON FUNCTION app.current_business() TO crm_service;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['crm_contacts','contact_identities','crm_events','outbox','identity_conflicts',
                           'ingest_keys','business_team','idempotency_keys','rejected_events',
                           'segment_definitions','segment_definition_versions',
                           'suppressed_identifiers','erasure_audit']
  LOOP
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (business_id = app.current_business())'
                   ' WITH CHECK (business_id = app.current_business())', t);
  END LOOP;
END $$;

DROP POLICY IF EXISTS tenant_isolation ON businesses;
CREATE POLICY tenant_isolation ON businesses USING (id = app.current_business());

-- Debezium reads the outbox through logical decoding (not subject to RLS) and, only on a snapshot, by SELECT.
DROP POLICY IF EXISTS debezium_read ON outbox;
CREATE POLICY debezium_read ON outbox FOR SELECT TO crm_debezium USING (true);
