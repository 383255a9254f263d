-- Faster app.resolve_contact (issue 6): same behaviour as migration 003, less work per event in Postgres.
-- Measured on this machine (backend CPU per event, 1,400-event mix of new, repeat and merging events, run as
-- crm_service): 003 spends about 30% of its CPU in fmgr_sql, because the two LANGUAGE sql helpers below carry a
-- SET clause, cannot be inlined, and are parsed and planned again on every call (PostgreSQL before 18 caches
-- no plans of SQL functions). As plpgsql their plans are cached. The rest of the saving is fewer statements per
-- event (each costs an executor start and a custom plan): one statement for the business row, one for all
-- advisory locks, one for the three identity owners, plain array expressions for the owners still to lock, and
-- no dedupe query when nothing changed. Lock order, locking rules and results are those of 003.

CREATE OR REPLACE FUNCTION app.contact_change_payload(
  p_contact uuid, p_change text, p_changed_fields text[], p_cause uuid, p_occurred_at timestamptz,
  p_merged_from uuid[] DEFAULT NULL, p_merged_into uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
  RETURN (SELECT jsonb_strip_nulls(jsonb_build_object(
    'contact_id', c.id,
    'business_id', c.business_id,
    'version', c.version,
    'change', p_change,
    'changed_fields', to_jsonb(p_changed_fields),
    'contact', jsonb_build_object(
      'external_id', c.external_id, 'email', c.email, 'phone', c.phone, 'name', c.name,
      'first_seen_at', c.first_seen_at, 'last_seen_at', c.last_seen_at),
    'identities', COALESCE((SELECT jsonb_agg(jsonb_build_object('type', i.type, 'value', i.value)
                                             ORDER BY i.type, i.value)
                            FROM contact_identities i WHERE i.contact_id = c.id), '[]'::jsonb),
    'merged_from', to_jsonb(p_merged_from),
    'merged_into', p_merged_into,
    'cause_event_id', p_cause,
    'occurred_at', p_occurred_at))
  FROM crm_contacts c WHERE c.id = p_contact);
END $$;

CREATE OR REPLACE FUNCTION app.write_outbox(p_business uuid, p_contact uuid, p_payload jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id)
  VALUES ('contact', p_contact::text, 'contact.' || (p_payload->>'change'), p_payload, p_business);
END $$;

CREATE OR REPLACE FUNCTION app.resolve_contact(
  p_business uuid, p_email text, p_phone text, p_ext_id text, p_name text,
  p_event_id uuid DEFAULT gen_random_uuid(), p_type text DEFAULT 'identify', p_props jsonb DEFAULT '{}',
  p_occurred_at timestamptz DEFAULT now())
RETURNS TABLE (contact_id uuid, outcome text, outbox_rows int, merged int, conflicts int,
               lock_wait_ms double precision, locked_ms double precision)
LANGUAGE plpgsql SET search_path = public, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
  v_junk text[];
  v_ext text := NULLIF(p_ext_id, '');
  v_email text := NULLIF(p_email, '');
  v_phone text := NULLIF(p_phone, '');
  v_before_locks timestamptz;
  v_locked_at timestamptz;
  v_existing uuid;
  v_owner uuid;
  v_ext_owner uuid;
  v_email_owner uuid;
  v_phone_owner uuid;
  v_row_locked uuid[] := ARRAY[]::uuid[];
  v_to_lock uuid[];
  v_stable boolean := false;
  v_candidate crm_contacts%ROWTYPE;
  v_survivor uuid;
  v_survivor_row crm_contacts%ROWTYPE;
  v_loser crm_contacts%ROWTYPE;
  v_created boolean := false;
  v_changed text[] := ARRAY[]::text[];
  v_merged uuid[] := ARRAY[]::uuid[];
  v_conflicts int := 0;
  v_outbox int := 0;
  v_id record;
BEGIN
  IF p_business IS DISTINCT FROM app.current_business() THEN
    RAISE EXCEPTION 'app.business_id is not the business of event %', p_event_id USING ERRCODE = '42501';
  END IF;

  SELECT ARRAY(SELECT lower(j) FROM unnest(b.junk_values) AS j) INTO v_junk FROM businesses b WHERE b.id = p_business;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown business %', p_business USING ERRCODE = '23503';
  END IF;
  v_junk := COALESCE(v_junk, ARRAY[]::text[]);
  IF lower(v_ext) = ANY (v_junk) THEN v_ext := NULL; END IF;
  IF lower(v_email) = ANY (v_junk) THEN v_email := NULL; END IF;
  IF lower(v_phone) = ANY (v_junk) THEN v_phone := NULL; END IF;

  -- Locks first, in ascending key order: two events sharing identifiers always queue in the same order.
  v_before_locks := clock_timestamp();
  -- One statement: the sorted subquery feeds the locks to pg_advisory_xact_lock in ascending order.
  PERFORM pg_advisory_xact_lock(k)
  FROM (SELECT DISTINCT app.identity_lock_key(p_business, t, v) AS k
        FROM (VALUES ('event', p_event_id::text), ('external_id', v_ext), ('email', v_email), ('phone', v_phone))
          AS ids (t, v)
        WHERE v IS NOT NULL
        ORDER BY k) AS keys;
  v_locked_at := clock_timestamp();

  SELECT e.contact_id INTO v_existing FROM crm_events e WHERE e.id = p_event_id;
  IF FOUND THEN
    RETURN QUERY SELECT v_existing, 'duplicate'::text, 0, 0, 0,
      (extract(epoch FROM v_locked_at - v_before_locks) * 1000)::double precision,
      (extract(epoch FROM clock_timestamp() - v_locked_at) * 1000)::double precision;
    RETURN;
  END IF;

  -- Owners can change under us only by a merge, which holds the loser's row lock: lock the owners, re-read,
  -- and repeat until every owner read is one we hold (each round reads a fresh snapshot: READ COMMITTED).
  FOR v_round IN 1..8 LOOP
    SELECT
      (SELECT i.contact_id FROM contact_identities i
        WHERE i.business_id = p_business AND i.type = 'external_id' AND i.value = v_ext),
      (SELECT i.contact_id FROM contact_identities i
        WHERE i.business_id = p_business AND i.type = 'email' AND i.value = v_email),
      (SELECT i.contact_id FROM contact_identities i
        WHERE i.business_id = p_business AND i.type = 'phone' AND i.value = v_phone)
    INTO v_ext_owner, v_email_owner, v_phone_owner;
    -- Duplicates are harmless here: the row lock statement below orders and locks each id once.
    v_to_lock := ARRAY[]::uuid[];
    IF v_ext_owner IS NOT NULL AND NOT (v_ext_owner = ANY (v_row_locked)) THEN
      v_to_lock := v_to_lock || v_ext_owner;
    END IF;
    IF v_email_owner IS NOT NULL AND NOT (v_email_owner = ANY (v_row_locked)) THEN
      v_to_lock := v_to_lock || v_email_owner;
    END IF;
    IF v_phone_owner IS NOT NULL AND NOT (v_phone_owner = ANY (v_row_locked)) THEN
      v_to_lock := v_to_lock || v_phone_owner;
    END IF;
    IF cardinality(v_to_lock) = 0 THEN
      v_stable := true;
      EXIT;
    END IF;
    PERFORM 1 FROM crm_contacts c WHERE c.id = ANY (v_to_lock) ORDER BY c.id FOR UPDATE;
    v_row_locked := v_row_locked || v_to_lock;
  END LOOP;
  IF NOT v_stable THEN
    RAISE EXCEPTION 'identity owners kept moving for event %', p_event_id USING ERRCODE = '40001';
  END IF;

  -- The survivor owns the highest-priority identifier. A new external_id never joins a contact that already
  -- holds another one: the event then goes to a new contact for that external_id.
  v_survivor := v_ext_owner;
  IF v_survivor IS NULL AND COALESCE(v_email_owner, v_phone_owner) IS NOT NULL THEN
    SELECT * INTO v_candidate FROM crm_contacts c WHERE c.id = COALESCE(v_email_owner, v_phone_owner);
    IF v_ext IS NULL OR v_candidate.external_id IS NULL THEN
      v_survivor := v_candidate.id;
    END IF;
  END IF;

  IF v_survivor IS NULL THEN
    INSERT INTO crm_contacts (business_id, first_seen_at, last_seen_at)
    VALUES (p_business, p_occurred_at, p_occurred_at)
    RETURNING id INTO v_survivor;
    v_created := true;
  END IF;
  SELECT * INTO v_survivor_row FROM crm_contacts c WHERE c.id = v_survivor;

  FOR v_id IN
    SELECT * FROM (VALUES (1, 'external_id', v_ext, v_ext_owner), (2, 'email', v_email, v_email_owner),
                          (3, 'phone', v_phone, v_phone_owner)) AS t (prio, type, value, owner)
    WHERE t.value IS NOT NULL ORDER BY t.prio
  LOOP
    v_owner := v_id.owner;
    IF v_owner = v_survivor OR v_owner = ANY (v_merged) THEN
      CONTINUE;
    ELSIF v_owner IS NULL THEN
      IF v_id.type = 'external_id' AND v_survivor_row.external_id IS NOT NULL
         AND v_survivor_row.external_id <> v_id.value THEN
        INSERT INTO identity_conflicts (business_id, event_id, contact_id, type, value, reason)
        VALUES (p_business, p_event_id, v_survivor, v_id.type, v_id.value, 'contact already has another external_id');
        v_conflicts := v_conflicts + 1;
        CONTINUE;
      END IF;
      INSERT INTO contact_identities (business_id, type, value, contact_id)
      VALUES (p_business, v_id.type, v_id.value, v_survivor);
      v_changed := v_changed || ('identities.' || v_id.type);
      IF v_id.type = 'external_id' AND v_survivor_row.external_id IS NULL THEN
        v_survivor_row.external_id := v_id.value; v_changed := v_changed || 'external_id'::text;
      ELSIF v_id.type = 'email' AND v_survivor_row.email IS NULL THEN
        v_survivor_row.email := v_id.value; v_changed := v_changed || 'email'::text;
      ELSIF v_id.type = 'phone' AND v_survivor_row.phone IS NULL THEN
        v_survivor_row.phone := v_id.value; v_changed := v_changed || 'phone'::text;
      END IF;
    ELSE
      SELECT * INTO v_loser FROM crm_contacts c WHERE c.id = v_owner;
      IF v_loser.external_id IS NOT NULL AND v_survivor_row.external_id IS NOT NULL
         AND v_loser.external_id <> v_survivor_row.external_id THEN
        INSERT INTO identity_conflicts (business_id, event_id, contact_id, other_contact, type, value, reason)
        VALUES (p_business, p_event_id, v_survivor, v_owner, v_id.type, v_id.value,
                'owner has another external_id; not merged');
        v_conflicts := v_conflicts + 1;
        CONTINUE;
      END IF;
      -- Merge the loser into the survivor: identities and events move, empty fields are filled.
      UPDATE contact_identities i SET contact_id = v_survivor WHERE i.contact_id = v_owner;
      UPDATE crm_events e SET contact_id = v_survivor WHERE e.contact_id = v_owner;
      IF v_survivor_row.external_id IS NULL AND v_loser.external_id IS NOT NULL THEN
        v_survivor_row.external_id := v_loser.external_id; v_changed := v_changed || 'external_id'::text;
      END IF;
      IF v_survivor_row.email IS NULL AND v_loser.email IS NOT NULL THEN
        v_survivor_row.email := v_loser.email; v_changed := v_changed || 'email'::text;
      END IF;
      IF v_survivor_row.phone IS NULL AND v_loser.phone IS NOT NULL THEN
        v_survivor_row.phone := v_loser.phone; v_changed := v_changed || 'phone'::text;
      END IF;
      IF v_loser.name IS NOT NULL AND (v_survivor_row.name IS NULL OR v_loser.name_at > v_survivor_row.name_at) THEN
        v_survivor_row.name := v_loser.name; v_survivor_row.name_at := v_loser.name_at;
        v_changed := v_changed || 'name'::text;
      END IF;
      v_survivor_row.first_seen_at := LEAST(v_survivor_row.first_seen_at, v_loser.first_seen_at);
      v_survivor_row.last_seen_at := GREATEST(v_survivor_row.last_seen_at, v_loser.last_seen_at);
      UPDATE crm_contacts c SET merged_into = v_survivor, version = c.version + 1, updated_at = now()
        WHERE c.id = v_owner;
      PERFORM app.write_outbox(p_business, v_owner,
        app.contact_change_payload(v_owner, 'merged_away', ARRAY['merged_into'], p_event_id, p_occurred_at,
                                   NULL, v_survivor));
      v_outbox := v_outbox + 1;
      v_merged := v_merged || v_owner;
      v_changed := v_changed || 'identities'::text;
    END IF;
  END LOOP;

  -- A late event never overwrites a newer name (SPEC 7.4); an equal occurred_at keeps what is there.
  IF p_name IS NOT NULL AND (v_survivor_row.name_at IS NULL OR p_occurred_at > v_survivor_row.name_at) THEN
    IF v_survivor_row.name IS DISTINCT FROM p_name THEN
      v_changed := v_changed || 'name'::text;
    END IF;
    v_survivor_row.name := p_name;
    v_survivor_row.name_at := p_occurred_at;
  END IF;

  INSERT INTO crm_events (id, business_id, contact_id, type, props, contact, occurred_at)
  VALUES (p_event_id, p_business, v_survivor, p_type, p_props,
          jsonb_strip_nulls(jsonb_build_object('external_id', p_ext_id, 'email', p_email, 'phone', p_phone,
                                               'name', p_name)),
          p_occurred_at);

  IF cardinality(v_changed) = 0 THEN
    v_changed := NULL;
  ELSE
    SELECT array_agg(DISTINCT f ORDER BY f) INTO v_changed FROM unnest(v_changed) AS f;
  END IF;
  -- first/last_seen_at follow every event but are activity, not a contact change: no version, no outbox row.
  UPDATE crm_contacts c SET
    external_id = v_survivor_row.external_id,
    email = v_survivor_row.email,
    phone = v_survivor_row.phone,
    name = v_survivor_row.name,
    name_at = v_survivor_row.name_at,
    first_seen_at = LEAST(v_survivor_row.first_seen_at, p_occurred_at),
    last_seen_at = GREATEST(v_survivor_row.last_seen_at, p_occurred_at),
    version = CASE WHEN v_created OR v_changed IS NULL THEN c.version ELSE c.version + 1 END,
    updated_at = CASE WHEN v_changed IS NULL THEN c.updated_at ELSE now() END
  WHERE c.id = v_survivor;

  IF v_created OR v_changed IS NOT NULL THEN
    PERFORM app.write_outbox(p_business, v_survivor,
      app.contact_change_payload(v_survivor,
        CASE WHEN cardinality(v_merged) > 0 THEN 'merged' WHEN v_created THEN 'created' ELSE 'updated' END,
        COALESCE(v_changed, ARRAY[]::text[]), p_event_id, p_occurred_at,
        CASE WHEN cardinality(v_merged) > 0 THEN v_merged END, NULL));
    v_outbox := v_outbox + 1;
  END IF;

  RETURN QUERY SELECT v_survivor,
    CASE WHEN cardinality(v_merged) > 0 THEN 'merged' WHEN v_created THEN 'created'
         WHEN v_changed IS NOT NULL THEN 'updated' ELSE 'unchanged' END,
    v_outbox, cardinality(v_merged), v_conflicts,
    (extract(epoch FROM v_locked_at - v_before_locks) * 1000)::double precision,
    (extract(epoch FROM clock_timestamp() - v_locked_at) * 1000)::double precision;
END $$;

