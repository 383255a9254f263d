-- 033's (business_id, contact_id) index still had business_id first, and a generic plan cached under a small
-- tenant chose it for the per-event dedupe lookup `crm_events WHERE id = $1`, filtering on id: 5,300 index tuples
-- per lookup for a bench tenant. The resolve path reads events by id (primary key) and by contact_id
-- (crm_events_contact_idx); no business-prefixed index is left to be chosen instead. Tenant-wide event reads are
-- for tools and tests, which can afford a scan.
DROP INDEX crm_events_business_contact_idx;
