-- The value of one event condition of a compiled segment rule (packages/segment-definitions/src/compile-sql.ts):
-- its result and the next time it can change without new data, computed by ONE scalar subquery over the contact's
-- events, so a rule's many conditions are columns of one LATERAL (fast to plan) rather than one join each.
CREATE TYPE app.segment_atom AS (v boolean, n timestamptz);
GRANT USAGE ON TYPE app.segment_atom TO crm_service;
