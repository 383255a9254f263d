-- Erasure and suppression (issue 18): what the management API / `npm run erasure` and the resolver-worker run in
-- Postgres. Repeatable (see 20_resolve_contact.sql); the tables are infra/migrations/050_erasure.sql.
--
-- Race-freedom: the resolver takes an advisory lock per identifier of an event (app.identity_lock_key) before it
-- reads any identity, and holds it to COMMIT. An erasure takes the same locks for every identifier of the person
-- (re-reading until the set is stable, as the resolver does for owners) before it deletes anything, and the
-- worker checks the suppression list (app.suppression_check) after the resolve took them, in the same transaction.
-- So an event in flight either commits before the erasure reads (and is erased with the person) or waits for the
-- erasure's COMMIT and then sees the suppression (and is rolled back): never a person recreated between check and
-- delete.
--
-- The entry points are SECURITY DEFINER (owned by crm_definer, infra/sql/90_ownership.sql): the services'
-- role has no DELETE on contacts, identities, events or the outbox. Each refuses a business other than the
-- transaction's tenant (app.current_business()), so a caller acts on the business it authorized and set.

-- Contacts of one merge tree: the root (followed up merged_into from p_contact) and every contact merged into it,
-- directly or through others. Empty when p_contact is not a contact of p_business.
CREATE OR REPLACE FUNCTION app.erasure_tree(p_business uuid, p_contact uuid)
RETURNS uuid[]
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  v_root uuid;
  v_tree uuid[];
BEGIN
  WITH RECURSIVE up (id, merged_into, depth) AS (
    SELECT c.id, c.merged_into, 0 FROM crm_contacts c WHERE c.id = p_contact AND c.business_id = p_business
    UNION ALL
    SELECT c.id, c.merged_into, u.depth + 1 FROM crm_contacts c JOIN up u ON c.id = u.merged_into
    WHERE u.depth < 10000
  )
  SELECT u.id INTO v_root FROM up u WHERE u.merged_into IS NULL OR u.depth >= 10000 ORDER BY u.depth DESC LIMIT 1;
  IF v_root IS NULL THEN
    RETURN ARRAY[]::uuid[];
  END IF;
  -- UNION (not ALL): a cycle, which merges never make, still ends
  WITH RECURSIVE down (id) AS (
    SELECT v_root
    UNION
    SELECT c.id FROM crm_contacts c JOIN down d ON c.merged_into = d.id
  )
  SELECT array_agg(d.id ORDER BY d.id = v_root DESC, d.id) INTO v_tree FROM down d;
  RETURN v_tree;
END $$;

/*
 * Step 1 of an erasure, in the caller's transaction: finds the person named by an identifier (type, normalized
 * value) or a contact id (p_type 'contact_id'), locks every identifier of the person's merge tree (the resolver's
 * advisory locks, ascending per round) and its contact rows, re-reading until nothing moved, and returns the tree
 * (root first) and its identities. The locks are held until the caller's COMMIT, so app.erase_contacts in the same
 * transaction deletes exactly this. No row when nothing matches (an identifier not seen yet can still be
 * suppressed).
 */
CREATE OR REPLACE FUNCTION app.erasure_lock(p_business uuid, p_type text, p_value text)
RETURNS TABLE (contacts uuid[], identities jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
  v_start uuid;
  v_tree uuid[];
  v_idents jsonb;
  v_prev_tree uuid[];
  v_prev_idents jsonb;
BEGIN
  IF p_business IS DISTINCT FROM app.current_business() THEN
    RAISE EXCEPTION 'app.business_id is not the business to erase from' USING ERRCODE = '42501';
  END IF;
  IF p_type NOT IN ('external_id', 'email', 'phone', 'anonymous_id', 'contact_id') THEN
    RAISE EXCEPTION 'unknown identifier type' USING ERRCODE = '22023';
  END IF;
  IF p_type = 'contact_id' THEN
    v_start := p_value::uuid;
  ELSIF EXISTS (SELECT 1 FROM businesses b, unnest(b.junk_values) AS j
                WHERE b.id = p_business AND lower(normalize(j, NFKC)) = lower(normalize(p_value, NFKC))) THEN
    -- A junk value (SPEC 7.1) never identifies anyone: suppressing it would drop every event that carries it.
    RAISE EXCEPTION 'a junk value of the business identifies no one' USING ERRCODE = 'CRM19';
  ELSE
    -- the resolver's lock of this identifier first: no event can link it while we look
    PERFORM pg_advisory_xact_lock(app.identity_lock_key(p_business, p_type, p_value));
    SELECT i.contact_id INTO v_start FROM contact_identities i
    WHERE i.business_id = p_business AND i.type = p_type AND i.value = p_value;
  END IF;
  IF v_start IS NULL THEN
    RETURN;
  END IF;

  FOR v_round IN 1..8 LOOP
    v_tree := app.erasure_tree(p_business, v_start);
    IF cardinality(v_tree) = 0 THEN
      RETURN;
    END IF;
    SELECT COALESCE(jsonb_agg(jsonb_build_array(i.type, i.value) ORDER BY i.type, i.value), '[]'::jsonb)
      INTO v_idents
      FROM contact_identities i WHERE i.contact_id = ANY (v_tree);
    IF v_tree = v_prev_tree AND v_idents = v_prev_idents THEN
      RETURN QUERY SELECT v_tree, v_idents;
      RETURN;
    END IF;
    -- identifiers in ascending key order, then the contact rows in ascending id order (the resolver's orders)
    PERFORM pg_advisory_xact_lock(k)
    FROM (SELECT DISTINCT app.identity_lock_key(p_business, e ->> 0, e ->> 1) AS k
          FROM jsonb_array_elements(v_idents) AS e ORDER BY k) AS keys;
    PERFORM 1 FROM crm_contacts c WHERE c.id = ANY (v_tree) ORDER BY c.id FOR UPDATE;
    v_prev_tree := v_tree;
    v_prev_idents := v_idents;
  END LOOP;
  RAISE EXCEPTION 'the person kept changing while being erased' USING ERRCODE = '40001';
END $$;

/*
 * Step 2: deletes the merge tree `p_contacts` (root first, as app.erasure_lock returned it) and everything that
 * holds its ids or identifiers, in the caller's transaction and under step 1's locks:
 *   crm_events of the tree (and their idempotency records), identity_conflicts naming a contact, an event or an
 *   identifier of the tree (the identifier is also removed from the other events those conflicts name), the
 *   tree's outbox rows, its segment memberships and membership changes (under the segments service's contact
 *   locks), rejected Segment messages of the business that contain one of its identifiers, its identities and
 *   contacts (tables of other areas that reference crm_contacts go by ON DELETE CASCADE);
 *   then adds `p_hashes` to the suppression list, writes ONE outbox row `erased` (ids only: contact_id = root,
 *   merged_from = the other erased contacts, cause_event_id = the audit id) and the audit row.
 * Returns the audit row's id and the counts.
 */
CREATE OR REPLACE FUNCTION app.erase_contacts(
  p_business uuid, p_contacts uuid[], p_identities jsonb, p_hashes text[], p_actor text, p_requested_by text)
RETURNS TABLE (erasure_id uuid, counts jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
  v_id uuid := gen_random_uuid();
  v_root crm_contacts%ROWTYPE;
  v_values text[];
  v_ids text[];
  v_events uuid[] := ARRAY[]::uuid[];
  v_counts jsonb := '{}'::jsonb;
  v_n int;
BEGIN
  IF p_business IS DISTINCT FROM app.current_business() THEN
    RAISE EXCEPTION 'app.business_id is not the business to erase from' USING ERRCODE = '42501';
  END IF;
  p_contacts := COALESCE(p_contacts, ARRAY[]::uuid[]);
  p_identities := COALESCE(p_identities, '[]'::jsonb);
  SELECT array_agg(e ->> 1) INTO v_values FROM jsonb_array_elements(p_identities) AS e;
  v_values := COALESCE(v_values, ARRAY[]::text[]);
  v_ids := p_contacts::text[];

  IF cardinality(p_contacts) > 0 THEN
    SELECT * INTO v_root FROM crm_contacts c WHERE c.id = p_contacts[1] AND c.business_id = p_business;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'contact to erase not found' USING ERRCODE = '02000';
    END IF;

    WITH gone AS (
      DELETE FROM crm_events e WHERE e.contact_id = ANY (p_contacts) AND e.business_id = p_business RETURNING e.id)
    SELECT COALESCE(array_agg(g.id), ARRAY[]::uuid[]) INTO v_events FROM gone g;
    v_counts := v_counts || jsonb_build_object('events', cardinality(v_events));

    -- An event of another contact that carried one of these identifiers (a refused link or merge) keeps no trace
    -- of it: the conflict names the event and the field.
    UPDATE crm_events e SET contact = e.contact - ic.type
    FROM identity_conflicts ic
    WHERE ic.business_id = p_business AND e.id = ic.event_id AND e.business_id = p_business
      AND NOT (e.id = ANY (v_events))
      AND (ic.contact_id = ANY (p_contacts) OR ic.other_contact = ANY (p_contacts) OR ic.value = ANY (v_values));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_counts := v_counts || jsonb_build_object('scrubbed_events', v_n);

    DELETE FROM identity_conflicts ic
    WHERE ic.business_id = p_business
      AND (ic.contact_id = ANY (p_contacts) OR ic.other_contact = ANY (p_contacts) OR ic.value = ANY (v_values)
           OR ic.event_id = ANY (v_events));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_counts := v_counts || jsonb_build_object('identity_conflicts', v_n);

    DELETE FROM idempotency_keys k WHERE k.event_id = ANY (v_events);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_counts := v_counts || jsonb_build_object('idempotency_records', v_n);

    -- Outbox rows (their payloads hold the identifiers). Rows already streamed are in contact.updated.v1 until its
    -- retention; the `erased` change below tells its consumers to delete. No index on aggregateid (it would cost
    -- every resolve an index insertion): created_at bounds the scan to the tree's lifetime.
    DELETE FROM outbox o
    WHERE o.business_id = p_business AND o.aggregatetype = 'contact' AND o.aggregateid = ANY (v_ids)
      AND o.created_at >= (SELECT min(c.created_at) FROM crm_contacts c WHERE c.id = ANY (p_contacts));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_counts := v_counts || jsonb_build_object('outbox_rows', v_n);

    -- Segment memberships and unstreamed membership changes (no foreign key cascades them: 057). The segments
    -- service's lock of each contact first (app.lock_segment_contacts, as every evaluation takes it): an
    -- evaluation in flight commits before these deletes, and a later one no longer finds the contacts.
    PERFORM app.lock_segment_contacts(p_contacts::text[]);
    DELETE FROM segment_memberships m WHERE m.business_id = p_business AND m.contact_id = ANY (p_contacts);
    DELETE FROM segment_outbox o WHERE o.business_id = p_business AND o.contact_id = ANY (p_contacts);

    DELETE FROM contact_identities i WHERE i.contact_id = ANY (p_contacts);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_counts := v_counts || jsonb_build_object('identities', v_n);

    -- One statement: merged_into references inside the tree are checked at its end, when all are gone.
    DELETE FROM crm_contacts c WHERE c.id = ANY (p_contacts) AND c.business_id = p_business;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_counts := v_counts || jsonb_build_object('contacts', v_n);
  ELSE
    v_counts := v_counts || jsonb_build_object('contacts', 0, 'events', 0);
  END IF;

  -- Segment messages the listener refused keep the message as sent: any that contains an identifier goes.
  DELETE FROM rejected_events r
  WHERE r.business_id = p_business
    AND EXISTS (SELECT 1 FROM unnest(v_values) AS v WHERE strpos(lower(r.message), lower(v)) > 0);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  v_counts := v_counts || jsonb_build_object('rejected_events', v_n);

  INSERT INTO suppressed_identifiers (business_id, hash, erasure_id)
  SELECT p_business, h, v_id FROM unnest(COALESCE(p_hashes, ARRAY[]::text[])) AS h
  ON CONFLICT (business_id, hash) DO NOTHING;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  v_counts := v_counts || jsonb_build_object('suppressed', v_n);

  IF v_root.id IS NOT NULL THEN
    PERFORM app.write_outbox(p_business, v_root.id, jsonb_strip_nulls(jsonb_build_object(
      'contact_id', v_root.id,
      'business_id', p_business,
      'version', v_root.version + 1,
      'change', 'erased',
      'changed_fields', '[]'::jsonb,
      'contact', '{}'::jsonb,
      'identities', '[]'::jsonb,
      'merged_from', CASE WHEN cardinality(p_contacts) > 1 THEN to_jsonb(p_contacts[2:]) END,
      'cause_event_id', v_id,
      'occurred_at', now())));
  END IF;

  INSERT INTO erasure_audit (id, business_id, action, actor, requested_by, counts)
  VALUES (v_id, p_business, 'erase', p_actor, p_requested_by, v_counts);
  RETURN QUERY SELECT v_id, v_counts;
END $$;

/*
 * The worker's check (issue 18), in the resolve statement itself: `SELECT r.* FROM app.resolve_contact(...) AS r
 * WHERE app.suppression_check(r.contact_id, <event id>, ...)` (r.event_id for app.resolve_contacts). It takes the
 * resolved row, so it runs after the resolve, which took the advisory locks of the event's identifiers; its probe is
 * a statement of its own and so reads a snapshot taken under those locks. An erasure takes the same locks: one that
 * committed before they were granted is seen here, one that comes later waits for this COMMIT and then erases what
 * the event wrote. No lock of its own, so the resolver's lock-wait and lock-hold figures keep their meaning.
 * Raises SQLSTATE CRM18 when an identifier of the event is suppressed: the transaction rolls back, nothing of the
 * event is stored, and the worker counts and skips it (a chunk is redone one by one). Returns true otherwise.
 * p_events / p_businesses / p_hashes: parallel arrays, one entry per identifier the event is resolved by (previous_id
 * under anonymous_id and external_id), with its keyed hash; the worker computes them, so the database never sees the
 * secret. A loop of primary-key probes: a join against the list let the planner hash the whole table per event.
 */
CREATE OR REPLACE FUNCTION app.suppression_check(
  p_resolved_contact uuid, p_event uuid, p_events uuid[], p_businesses uuid[], p_hashes text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  FOR i IN 1 .. COALESCE(cardinality(p_hashes), 0) LOOP
    IF p_events[i] = p_event THEN
      PERFORM 1 FROM suppressed_identifiers s WHERE s.business_id = p_businesses[i] AND s.hash = p_hashes[i];
      IF FOUND THEN
        RAISE EXCEPTION 'event % carries a suppressed identifier', p_event USING ERRCODE = 'CRM18';
      END IF;
    END IF;
  END LOOP;
  RETURN true;
END $$;

-- Lifts suppressions (the person came back and consented): removes the given hashes of the tenant's business and
-- records it. Returns how many were there.
CREATE OR REPLACE FUNCTION app.lift_suppression(
  p_business uuid, p_hashes text[], p_actor text, p_requested_by text)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_n int;
BEGIN
  IF p_business IS DISTINCT FROM app.current_business() THEN
    RAISE EXCEPTION 'app.business_id is not the business to lift a suppression in' USING ERRCODE = '42501';
  END IF;
  DELETE FROM suppressed_identifiers s WHERE s.business_id = p_business AND s.hash = ANY (p_hashes);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    INSERT INTO erasure_audit (business_id, action, actor, requested_by, counts)
    VALUES (p_business, 'lift_suppression', p_actor, p_requested_by, jsonb_build_object('lifted', v_n));
  END IF;
  RETURN v_n;
END $$;

-- app.erasure_tree is SECURITY INVOKER (a caller sees only what RLS and its privileges let it read): PUBLIC keeps
-- EXECUTE, as on the resolver's helpers, and app.erasure_lock runs it as crm_definer.
GRANT EXECUTE ON FUNCTION app.erasure_tree(uuid, uuid) TO crm_service;
REVOKE ALL ON FUNCTION app.erasure_lock(uuid, text, text),
  app.erase_contacts(uuid, uuid[], jsonb, text[], text, text),
  app.suppression_check(uuid, uuid, uuid[], uuid[], text[]), app.lift_suppression(uuid, text[], text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.erasure_lock(uuid, text, text),
  app.erase_contacts(uuid, uuid[], jsonb, text[], text, text),
  app.suppression_check(uuid, uuid, uuid[], uuid[], text[]), app.lift_suppression(uuid, text[], text, text) TO crm_service;
-- crm_definer's table grants are in 90_ownership.sql, which creates that role.
