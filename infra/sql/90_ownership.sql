-- Least privilege (issue 14.3): who owns the SECURITY DEFINER functions, and what the services' role may not do.
-- Repeatable and last in name order: the runner applies it again whenever a file before it ran (migrate.ts), so a
-- definer function created or replaced there is handed to its owner in the same transaction.

-- The owner of the definer functions: not a superuser and cannot log in, so a flaw in one of them reaches only the
-- tables granted below. BYPASSRLS because each of them answers before a tenant is known or across tenants
-- (which businesses a user may send for, whose ingest key this is, expired idempotency records and rejected
-- messages, live instances).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_definer') THEN
    CREATE ROLE crm_definer NOLOGIN;
  END IF;
END $$;
ALTER ROLE crm_definer NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;

-- Exactly what the bodies of the definer functions read and write.
GRANT USAGE ON SCHEMA app TO crm_definer;
GRANT SELECT ON businesses, business_team, ingest_keys TO crm_definer;
GRANT SELECT, DELETE ON idempotency_keys TO crm_definer;
GRANT SELECT, DELETE ON rejected_events TO crm_definer;
GRANT SELECT, INSERT, UPDATE, DELETE ON app.ingest_instances TO crm_definer;
-- the ops console's lookups across tenants and its audit trail (infra/sql/55_console.sql)
GRANT SELECT ON crm_contacts, contact_identities TO crm_definer;
GRANT SELECT, INSERT ON console_audit TO crm_definer;
-- Erasure (infra/sql/50_erasure.sql): a person's rows everywhere, the suppression list and the audit. UPDATE on
-- crm_contacts for the row locks (FOR UPDATE), on crm_events to remove an erased identifier from another contact's
-- event; INSERT on the outbox for the `erased` change (app.write_outbox).
GRANT SELECT, UPDATE, DELETE ON crm_contacts, crm_events TO crm_definer;
GRANT SELECT, DELETE ON contact_identities, identity_conflicts TO crm_definer;
GRANT SELECT, INSERT, DELETE ON outbox, suppressed_identifiers TO crm_definer;
GRANT INSERT ON erasure_audit TO crm_definer;
GRANT SELECT, DELETE ON segment_memberships, segment_outbox TO crm_definer;
-- services/segments (40_segments.sql): which segments need a job, which memberships are due
GRANT SELECT ON segment_definitions, segment_jobs, segment_memberships TO crm_definer;
GRANT SELECT, UPDATE ON automation_deliveries TO crm_definer;
GRANT SELECT ON automation_endpoints, automation_messages TO crm_definer;

-- Every definer function of the schema, so one added later cannot stay the superuser's.
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.prosecdef AND n.nspname IN ('app', 'public')
  LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO crm_definer', f);
  END LOOP;
END $$;

-- The services' role writes the outbox only through the resolver's transaction; pruning runs as an operator
-- (DATABASE_ADMIN_URL, services/outbox-connector prune), so a DELETE of unstreamed rows cannot come from a service.
REVOKE DELETE, TRUNCATE ON outbox FROM crm_service;
