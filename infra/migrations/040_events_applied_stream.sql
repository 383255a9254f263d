-- events.applied.v1 (segments and automations, issues 16-17): Debezium streams every row inserted into crm_events
-- through the slot and publication it already reads, so each applied event reaches the topic once, after its
-- transaction committed, with no second write per event. The publication sends inserts and updates; the connector's
-- second Event Router keeps inserts only (a merge's UPDATE of contact_id is announced on contact.updated.v1).
ALTER PUBLICATION crm_outbox ADD TABLE public.crm_events;
-- Debezium reads the table's columns at start (the rows themselves come from the replication stream).
GRANT SELECT ON crm_events TO crm_debezium;
