-- The ops console's own database role (issue 19, least privilege): crm_console reads contacts, identities, events,
-- conflicts and the outbox under the same RLS as every service, and only it may call the console's cross-tenant
-- lookups (infra/sql/55_console.sql). The services' role crm_service gets none of that. `npm run migrate` gives the
-- role its login and password from CONSOLE_DATABASE_URL; created here without one, so these grants always apply.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_console') THEN
    CREATE ROLE crm_console NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
GRANT USAGE ON SCHEMA public, app TO crm_console;
-- Read only: the console changes nothing in the tenant tables (its writes are the audit trail, through functions).
GRANT SELECT ON crm_contacts, contact_identities, crm_events, identity_conflicts, outbox TO crm_console;
