-- services/segments writes ~13 membership rows and ~12 outbox rows per new contact in the bench's mix of 50
-- segments, and each foreign key below cost a check per row that also took a KEY SHARE lock: on the contact (whose
-- row the resolver updates with every event) and on the definition (the same few rows locked by every concurrent
-- evaluation: multixacts). Dropping them cut an evaluation of 100 new contacts x 50 segments from 73 to 58 ms.
-- What they gave is kept another way:
--   contact_id -> crm_contacts ON DELETE CASCADE: erasure (app.erase_contacts, infra/sql/50_erasure.sql) deletes the
--   contacts' memberships and outbox rows itself, after taking the segments service's lock of each contact, so an
--   evaluation in flight commits first and a later one finds no contact (it evaluates only rows of crm_contacts);
--   (business_id, segment_id) -> segment_definitions: rows are written only for the segment ids of the business's
--   own active definitions (read under RLS), and RLS pins business_id; definitions are archived, never deleted.
ALTER TABLE segment_memberships DROP CONSTRAINT IF EXISTS segment_memberships_contact_id_fkey;
ALTER TABLE segment_memberships DROP CONSTRAINT IF EXISTS segment_memberships_business_id_segment_id_fkey;
ALTER TABLE segment_outbox DROP CONSTRAINT IF EXISTS segment_outbox_contact_id_fkey;
