-- The outbox of segment membership changes (issue 16.4): one row per entered/exited, written in the transaction
-- that changes segment_memberships, streamed by the same Debezium connector and slot as `outbox` to
-- segment.membership.v1 (services/outbox-connector/connector.json), pruned like it (txid + app.outbox_prune_marks).
CREATE TABLE segment_outbox (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregatetype text NOT NULL DEFAULT 'segment_membership',
  -- the contact id (the message key)
  aggregateid   text NOT NULL,
  -- segment.entered | segment.exited
  type          text NOT NULL,
  payload       jsonb NOT NULL,
  business_id   uuid NOT NULL,
  -- erasure (issue 18) removes the contact's unpruned rows (a DELETE is not published)
  contact_id    uuid NOT NULL REFERENCES crm_contacts (id) ON DELETE CASCADE,
  created_at    timestamptz NOT NULL DEFAULT now(),
  txid          xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX segment_outbox_created_idx ON segment_outbox (created_at);
CREATE INDEX segment_outbox_txid_idx ON segment_outbox (txid);
CREATE INDEX segment_outbox_contact_idx ON segment_outbox (contact_id);
ALTER TABLE segment_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE segment_outbox FORCE ROW LEVEL SECURITY;
-- No DELETE for services: pruning runs as an operator (services/outbox-connector prune).
GRANT SELECT, INSERT ON segment_outbox TO crm_service;
GRANT SELECT ON segment_outbox TO crm_debezium;

ALTER PUBLICATION crm_outbox ADD TABLE public.segment_outbox;
