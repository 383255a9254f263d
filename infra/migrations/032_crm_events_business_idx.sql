-- Tenant-scoped reads of events (RLS filters every query on business_id) were sequential scans of the whole
-- table (a million benchmark events in the shared database made the resolver tests' checks crawl). One more
-- index costs each event insert a little, within the noise of the savings of 030/031.
CREATE INDEX IF NOT EXISTS crm_events_business_idx ON crm_events (business_id);
