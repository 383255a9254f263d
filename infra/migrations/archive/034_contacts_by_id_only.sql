-- Same cause as 033, on crm_contacts. The planner estimates RLS's `business_id = app.current_business()` with the
-- tenant current at planning time (it evaluates the stable function), and plpgsql caches that plan for the session.
-- A connection that first resolved for a small tenant kept a plan reading `crm_contacts WHERE id = ANY ($1)`
-- through a business-prefixed index (filtering on id), and used it for a large tenant: thousands of index tuples per
-- statement. Every statement of the resolve path reads contacts by id (the primary key); identifiers are looked up
-- in contact_identities. Neither index below serves the pipeline, so neither is left to be chosen.
DROP INDEX crm_contacts_business_idx;
DROP INDEX crm_contacts_email_idx;
