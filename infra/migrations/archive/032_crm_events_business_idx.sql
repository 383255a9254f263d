-- Tenant-scoped reads of events (RLS filters every query on business_id) were sequential scans of the whole
-- table: with a million benchmark events in the shared database, the resolver's conflict test spent 100 s in them.
-- One more index costs each event insert a little (measured within noise beside the savings of 030/031).
CREATE INDEX IF NOT EXISTS crm_events_business_idx ON crm_events (business_id);
