-- Outbox ids in time order (UUID version 7: 48 bits of Unix milliseconds, then random bits), not random (version 4).
-- A random key lands every insertion on a random leaf of the primary key: after each checkpoint each of those
-- pages is written whole to the WAL once more. services/segments writes ~12 segment_outbox rows per new contact;
-- one evaluation of 100 new contacts x 50 segments wrote 5.2-13 MB of WAL with random ids and 3.0-3.6 MB with
-- these (and took 46-69 ms instead of 54-127 ms). The resolver's outbox row per event gets the same. Consumers see
-- an id of the same form (a UUID) and still dedupe on it. The default is an expression (a version 4 UUID's random
-- bits, its first 6 bytes replaced by clock_timestamp() in ms, its version nibble 4 -> 7), not a function: functions
-- live in infra/sql, which runs after the migrations.
DO $$
DECLARE
  v7 constant text := $sql$encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
    substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
    52, 1), 53, 1), 'hex')::uuid$sql$;
BEGIN
  EXECUTE format('ALTER TABLE outbox ALTER COLUMN id SET DEFAULT %s', v7);
  EXECUTE format('ALTER TABLE segment_outbox ALTER COLUMN id SET DEFAULT %s', v7);
END $$;
