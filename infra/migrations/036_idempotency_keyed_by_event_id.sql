-- Idempotency records are keyed by their event id (issue 13). A keyed request's event id is UUIDv5 of (business,
-- caller, key), so it names the scope as the old key did, and the worker already treats it as the event's identity.
-- With the old key (business_id, caller, key_hash), a lookup of several keys at once (`key_hash = ANY (...)`) was
-- the planner's choice: PostgreSQL 15 plans an array on a non-leading column either as an index condition or as a
-- filter over the whole (business, caller) prefix, and with statistics taken before a producer's keys arrived it
-- chose the filter, so marking one request done read every key of its caller (about 2,800 index tuples per scan in
-- the bench, 6,800 after a 10 s load run). A one-column key leaves no such choice, and its entries are 16 bytes
-- instead of about 130.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (event_id);
-- Each record is updated once (in flight -> done) right after its insert; room left on its page keeps that update
-- on the page (HOT), without new index entries.
ALTER TABLE idempotency_keys SET (fillfactor = 70);
-- The API writes records only for a business it has just authorized, and records of a deleted business age out with
-- the retention (24 h). The foreign key's check ran once per inserted record (a statement per key of a keyed batch)
-- and took a share lock on the business's row in every claiming transaction.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_business_id_fkey;
-- Records are inserted in created_at order and only pruning reads by it (the oldest block ranges, hourly): a BRIN
-- index serves that, where the B-tree cost an index insertion per record.
DROP INDEX idempotency_keys_created_idx;
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys USING brin (created_at);
