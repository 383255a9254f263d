-- Outbox pruning that never deletes a row Debezium has not streamed (SPEC 8).
--
-- A row is streamed once the slot's confirmed_flush_lsn is past the commit record of the transaction that
-- inserted it. Rows do not carry their commit LSN, so the pruner records marks: the oldest transaction still
-- running (xmin of a fresh snapshot) and, read after it, the current WAL insert position. Every transaction older
-- than that xmin had finished, so its commit record lies before the LSN; once the slot has confirmed the LSN,
-- every outbox row written by such a transaction is in Kafka and may go. `created_at` (the transaction's start
-- time) could not prove this: a transaction can start early and commit long after.

-- The inserting transaction, as a 64-bit id comparable with pg_snapshot_xmin (xmin wraps; xid8 does not).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS outbox_txid_idx ON outbox (txid);

CREATE TABLE IF NOT EXISTS app.outbox_prune_marks (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- transactions with a smaller id had all ended when the mark was taken
  oldest_running xid8 NOT NULL,
  -- WAL insert position read after oldest_running: every such transaction committed before it
  lsn            pg_lsn NOT NULL,
  taken_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_prune_marks_lsn_idx ON app.outbox_prune_marks (lsn);
