#!/bin/bash
# Runs once when the compose Postgres volume is created; crm's roles and schema come from `npm run migrate`.
# Apicurio gets its own role owning its own database, never the superuser. The password arrives as a SCRAM verifier
# (npm run stack -- compose-env computes it), so no statement holds it.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U postgres -d postgres -v verifier="$CRM_REGISTRY_PASSWORD_VERIFIER" <<'SQL'
CREATE ROLE crm_registry LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'verifier';
CREATE DATABASE registry OWNER crm_registry;
REVOKE ALL ON DATABASE registry FROM PUBLIC;
SQL
