-- Row level security adds `business_id = app.current_business()` to every statement on a tenant table. With an
-- index on business_id alone, the merge's generic plan (plpgsql caches one after five calls) for
-- `UPDATE crm_events SET contact_id = ... WHERE contact_id = $1` chose that index and filtered, reading every event
-- of the tenant (6,500-13,000 index tuples per scan for a bench tenant). With contact_id as the index's second
-- column the same plan finds its rows directly, and tenant-scoped reads keep an index.
-- Not fixed here: `crm_contacts WHERE id = ANY ($1)` shows the same pattern with crm_contacts_business_idx (and,
-- without it, with crm_contacts_email_idx); the resolve function needs that statement rewritten.
CREATE INDEX crm_events_business_contact_idx ON crm_events (business_id, contact_id);
DROP INDEX crm_events_business_idx;
