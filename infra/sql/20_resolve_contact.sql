-- Identity resolution (SPEC 7): everything the resolver-worker runs in Postgres, one current definition each.
-- Repeatable: applied after the versioned migrations whenever this file changes (or a versioned migration ran), in
-- the same transaction; CREATE OR REPLACE keeps each function's grants, and the ones below restate them. A change
-- of a signature or of the returned columns needs a DROP FUNCTION of the old one here first.
--
-- Values arrive normalized by the worker (email NFKC+lowercase, phone E.164); junk values are dropped here.
--
-- Cost (measured for issue 6, backend CPU per event, 1,400-event mix of new, repeat and merging events, run as
-- crm_service): the helpers are plpgsql, not LANGUAGE sql, because a SQL function with a SET clause cannot be
-- inlined and is parsed and planned again on every call (PostgreSQL before 18 caches no plans of SQL functions):
-- that was about 30% of the function's CPU. The rest comes from few statements per event (each costs an executor
-- start and a custom plan): one for the business row, one for all advisory locks, one for all the identity
-- owners, plain array expressions for the owners still to lock, and no dedupe query when nothing changed.

-- The 64-bit advisory lock key of one identifier (or event id) of a business.
CREATE OR REPLACE FUNCTION app.identity_lock_key(p_business uuid, p_type text, p_value text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ('x' || left(md5(p_business::text || '|' || p_type || '|' || p_value), 16))::bit(64)::bigint
$$;

-- The value of a contact.updated.v1 message (SPEC 8), described by schemas/contact.updated.v1.json. Identities of
-- type anonymous_id go in `anonymous_ids`, not in `identities`: readers of the first schema version validate
-- `identities[].type` against three types, and a fourth would make them refuse every change of such a contact.
-- `contact.traits` is set after jsonb_strip_nulls, so a trait whose value is null stays in the message.
CREATE OR REPLACE FUNCTION app.contact_change_payload(
  p_contact uuid, p_change text, p_changed_fields text[], p_cause uuid, p_occurred_at timestamptz,
  p_merged_from uuid[] DEFAULT NULL, p_merged_into uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  v_payload jsonb;
  v_traits jsonb;
BEGIN
  SELECT jsonb_strip_nulls(jsonb_build_object(
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
                            FROM contact_identities i WHERE i.contact_id = c.id AND i.type <> 'anonymous_id'),
                           '[]'::jsonb),
    'anonymous_ids', (SELECT jsonb_agg(i.value ORDER BY i.value)
                      FROM contact_identities i WHERE i.contact_id = c.id AND i.type = 'anonymous_id'),
    'merged_from', to_jsonb(p_merged_from),
    'merged_into', p_merged_into,
    'cause_event_id', p_cause,
    'occurred_at', p_occurred_at)), c.traits
  INTO v_payload, v_traits
  FROM crm_contacts c WHERE c.id = p_contact;
  IF v_traits IS NOT NULL AND v_traits <> '{}'::jsonb THEN
    v_payload := jsonb_set(v_payload, '{contact,traits}', v_traits);
  END IF;
  RETURN v_payload;
END $$;

-- Per-trait "latest occurred_at wins" (SPEC 11 "Traits"): applies `p_new` (a trait object) to a contact's traits
-- and their timestamps. A key is taken when the contact has no timestamp for it or an older one; an equal
-- occurred_at keeps what is there, as for the name, so the result does not depend on arrival order. Each key of
-- `p_new` is dated by `p_new_at` (a merged contact's traits_at) or else `p_at` (the event's occurred_at).
-- Bounded: a contact holds at most 200 keys and 32 KB of traits as Postgres prints them (the edge allows 16 KB of
-- compact JSON per event; jsonb's text adds a space after each ':' and ',', at most doubling it, so one event's
-- traits always fit); a key that would pass either bound is not stored (the event row keeps it).
-- Returns the new traits, their timestamps and the changed keys as `traits.<key>`.
CREATE OR REPLACE FUNCTION app.apply_traits(
  p_traits jsonb, p_traits_at jsonb, p_new jsonb, p_new_at jsonb, p_at timestamptz,
  OUT traits jsonb, OUT traits_at jsonb, OUT changed text[])
LANGUAGE plpgsql IMMUTABLE SET search_path = public, pg_temp AS $$
DECLARE
  v_key text;
  v_value jsonb;
  v_at timestamptz;
  v_keys int;
  v_bytes int;
  v_growth int;
BEGIN
  traits := COALESCE(p_traits, '{}'::jsonb);
  traits_at := COALESCE(p_traits_at, '{}'::jsonb);
  changed := ARRAY[]::text[];
  IF p_new IS NULL OR jsonb_typeof(p_new) <> 'object' OR p_new = '{}'::jsonb THEN
    RETURN;
  END IF;
  SELECT count(*) INTO v_keys FROM jsonb_object_keys(traits);
  v_bytes := octet_length(traits::text);
  FOR v_key, v_value IN SELECT e.key, e.value FROM jsonb_each(p_new) AS e ORDER BY e.key LOOP
    v_at := COALESCE((p_new_at ->> v_key)::timestamptz, p_at);
    IF (traits_at ->> v_key)::timestamptz >= v_at THEN
      CONTINUE;
    END IF;
    IF traits ? v_key THEN
      v_growth := octet_length(v_value::text) - octet_length((traits -> v_key)::text);
    ELSE
      IF v_keys >= 200 THEN CONTINUE; END IF;
      v_growth := octet_length(to_jsonb(v_key)::text) + octet_length(v_value::text) + 4;
    END IF;
    IF v_bytes + v_growth > 32768 THEN
      CONTINUE;
    END IF;
    IF NOT (traits ? v_key) THEN v_keys := v_keys + 1; END IF;
    v_bytes := v_bytes + v_growth;
    IF (traits -> v_key) IS DISTINCT FROM v_value THEN
      changed := changed || ('traits.' || v_key);
    END IF;
    traits := jsonb_set(traits, ARRAY[v_key], v_value);
    traits_at := jsonb_set(traits_at, ARRAY[v_key], to_jsonb(v_at));
  END LOOP;
END $$;

-- One outbox row per contact change (SPEC 7.5), routed by Debezium's Outbox Event Router.
CREATE OR REPLACE FUNCTION app.write_outbox(p_business uuid, p_contact uuid, p_payload jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id)
  VALUES ('contact', p_contact::text, 'contact.' || (p_payload->>'change'), p_payload, p_business);
END $$;

-- PUBLIC keeps EXECUTE on the four helpers (the default; they are SECURITY INVOKER, so a caller still needs the
-- table privileges).
GRANT EXECUTE ON FUNCTION app.identity_lock_key(uuid, text, text), app.write_outbox(uuid, uuid, jsonb),
  app.contact_change_payload(uuid, text, text[], uuid, timestamptz, uuid[], uuid),
  app.apply_traits(jsonb, jsonb, jsonb, jsonb, timestamptz) TO crm_service;

-- Design notes on app.resolve_contact:
--  * Identifier advisory locks (ascending 64-bit keys) serialize events that share an identifier. They are not
--    enough for merges: a merge moves ALL identities of the loser, including ones the merging transaction never
--    locked. So candidate contacts are also row-locked (FOR UPDATE, ascending id) and their ownership re-read
--    until stable; a merge needs the loser's row lock, and the ascending order keeps two merges from deadlocking.
--  * Junk values are compared with the whole value (never the local part of an email), NFKC-normalized and
--    lowercased on both sides (issue 11); the event row keeps the value as received.
--  * Name ties on equal occurred_at keep the current name, so the result does not depend on arrival order.
--  * The survivor's change is `merged` whenever a merge happened (even if this event created it), so downstream
--    sees `merged` + `merged_from` for every `merged_away`.
--  * anonymous_id (issue 15) is the lowest priority. An anonymous contact (no external_id, email or phone) is
--    taken over by the first identified event that carries its anonymous_id, or merged into the identified
--    contact that event resolves to. A contact that is identified is never merged, nor given the identifiers of
--    another person, through an anonymous_id alone (a shared device): the event resolves by its identified
--    identifiers, and the anonymous_id stays with its owner, recorded in identity_conflicts.
--  * alias (previous_id, issue 15): the event's contact and the owner of previous_id (as an anonymous_id, else as
--    an external_id) are one person, so they merge even when both are identified; only two different
--    external_ids still refuse (conflict recorded). An unknown previous_id is linked as an anonymous_id.
--  * Traits: app.apply_traits, per key, for the merged contacts' traits and then the event's.
--  * A bounded lock_timeout: a stuck transaction makes others fail (and retry) instead of hanging forever.
--  * Returns what the worker measures: merges, conflicts, lock wait, and how long the locks had been held when
--    the function returned (the worker adds the COMMIT round trip to get the hold time).

/*
 * Resolves the contact of one event and records it, in the caller's transaction (tenant set by the caller):
 *   lock every identifier (and the event id) in ascending 64-bit key order, before any identity read;
 *   skip a redelivered event; lock the owning contacts in ascending id order and re-read until stable;
 *   resolve external_id -> email -> phone -> anonymous_id (then the alias's previous_id); create, link or merge;
 *   never put two external_ids on one contact, never join two identified contacts through an anonymous_id
 *   (conflicts recorded instead); apply the traits per key; insert the event row; bump the version and write one
 *   outbox row per contact change, none when nothing changed.
 * outcome: 'created' | 'updated' | 'merged' | 'unchanged' | 'duplicate'.
 */
-- The signature before issue 15; the parameters added since have defaults, so its callers keep working.
DROP FUNCTION IF EXISTS app.resolve_contact(uuid, text, text, text, text, uuid, text, jsonb, timestamptz);
CREATE OR REPLACE FUNCTION app.resolve_contact(
  p_business uuid, p_email text, p_phone text, p_ext_id text, p_name text,
  p_event_id uuid DEFAULT gen_random_uuid(), p_type text DEFAULT 'identify', p_props jsonb DEFAULT '{}',
  p_occurred_at timestamptz DEFAULT now(), p_anonymous_id text DEFAULT NULL, p_previous_id text DEFAULT NULL,
  p_traits jsonb DEFAULT NULL)
RETURNS TABLE (contact_id uuid, outcome text, outbox_rows int, merged int, conflicts int,
               lock_wait_ms double precision, locked_ms double precision)
LANGUAGE plpgsql SET search_path = public, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
  v_junk text[];
  v_ext text := NULLIF(p_ext_id, '');
  v_email text := NULLIF(p_email, '');
  v_phone text := NULLIF(p_phone, '');
  v_anon text := NULLIF(p_anonymous_id, '');
  v_prev text := NULLIF(p_previous_id, '');
  v_identified_event boolean;
  v_before_locks timestamptz;
  v_locked_at timestamptz;
  v_existing uuid;
  v_owner uuid;
  v_ext_owner uuid;
  v_email_owner uuid;
  v_phone_owner uuid;
  v_anon_owner uuid;
  v_prev_owner uuid;
  v_prev_ext_owner uuid;
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
  v_traits record;
BEGIN
  IF p_business IS DISTINCT FROM app.current_business() THEN
    RAISE EXCEPTION 'app.business_id is not the business of event %', p_event_id USING ERRCODE = '42501';
  END IF;

  -- Junk values compare in one form on both sides: NFKC (fullwidth `ｎｕｌｌ` is `null`), then lowercase.
  SELECT ARRAY(SELECT lower(normalize(j, NFKC)) FROM unnest(b.junk_values) AS j) INTO v_junk
    FROM businesses b WHERE b.id = p_business;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown business %', p_business USING ERRCODE = '23503';
  END IF;
  v_junk := COALESCE(v_junk, ARRAY[]::text[]);
  IF lower(normalize(v_ext, NFKC)) = ANY (v_junk) THEN v_ext := NULL; END IF;
  IF lower(normalize(v_email, NFKC)) = ANY (v_junk) THEN v_email := NULL; END IF;
  IF lower(normalize(v_phone, NFKC)) = ANY (v_junk) THEN v_phone := NULL; END IF;
  IF lower(normalize(v_anon, NFKC)) = ANY (v_junk) THEN v_anon := NULL; END IF;
  IF lower(normalize(v_prev, NFKC)) = ANY (v_junk) THEN v_prev := NULL; END IF;
  -- an alias of the event's own id names nothing else
  IF v_prev = v_ext OR v_prev = v_anon THEN v_prev := NULL; END IF;
  v_identified_event := COALESCE(v_ext, v_email, v_phone) IS NOT NULL;

  -- Locks first, in ascending key order: two events sharing identifiers always queue in the same order.
  v_before_locks := clock_timestamp();
  -- One statement: the sorted subquery feeds the locks to pg_advisory_xact_lock in ascending order.
  PERFORM pg_advisory_xact_lock(k)
  FROM (SELECT DISTINCT app.identity_lock_key(p_business, t, v) AS k
        FROM (VALUES ('event', p_event_id::text), ('external_id', v_ext), ('email', v_email), ('phone', v_phone),
                     ('anonymous_id', v_anon), ('anonymous_id', v_prev), ('external_id', v_prev))
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
        WHERE i.business_id = p_business AND i.type = 'phone' AND i.value = v_phone),
      (SELECT i.contact_id FROM contact_identities i
        WHERE i.business_id = p_business AND i.type = 'anonymous_id' AND i.value = v_anon),
      (SELECT i.contact_id FROM contact_identities i
        WHERE i.business_id = p_business AND i.type = 'anonymous_id' AND i.value = v_prev),
      (SELECT i.contact_id FROM contact_identities i
        WHERE i.business_id = p_business AND i.type = 'external_id' AND i.value = v_prev)
    INTO v_ext_owner, v_email_owner, v_phone_owner, v_anon_owner, v_prev_owner, v_prev_ext_owner;
    -- previous_id names an anonymous_id first, else an external_id
    v_prev_owner := COALESCE(v_prev_owner, v_prev_ext_owner);
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
    IF v_anon_owner IS NOT NULL AND NOT (v_anon_owner = ANY (v_row_locked)) THEN
      v_to_lock := v_to_lock || v_anon_owner;
    END IF;
    IF v_prev_owner IS NOT NULL AND NOT (v_prev_owner = ANY (v_row_locked)) THEN
      v_to_lock := v_to_lock || v_prev_owner;
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
  -- No identified owner: the owner of the anonymous_id, if the event is anonymous too or that contact is (an
  -- anonymous visitor who identifies keeps their contact); else the alias's previous contact.
  IF v_survivor IS NULL AND v_anon_owner IS NOT NULL THEN
    SELECT * INTO v_candidate FROM crm_contacts c WHERE c.id = v_anon_owner;
    IF NOT v_identified_event
       OR COALESCE(v_candidate.external_id, v_candidate.email, v_candidate.phone) IS NULL THEN
      v_survivor := v_candidate.id;
    END IF;
  END IF;
  IF v_survivor IS NULL AND v_prev_owner IS NOT NULL THEN
    SELECT * INTO v_candidate FROM crm_contacts c WHERE c.id = v_prev_owner;
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
                          (3, 'phone', v_phone, v_phone_owner), (4, 'anonymous_id', v_anon, v_anon_owner),
                          (5, 'previous_id', v_prev, v_prev_owner)) AS t (prio, type, value, owner)
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
      -- an unknown previous_id is kept as an anonymous_id: later events carrying it find this contact
      INSERT INTO contact_identities (business_id, type, value, contact_id)
      VALUES (p_business, CASE WHEN v_id.type = 'previous_id' THEN 'anonymous_id' ELSE v_id.type END, v_id.value,
              v_survivor);
      v_changed := v_changed
        || ('identities.' || CASE WHEN v_id.type = 'previous_id' THEN 'anonymous_id' ELSE v_id.type END);
      IF v_id.type = 'external_id' AND v_survivor_row.external_id IS NULL THEN
        v_survivor_row.external_id := v_id.value; v_changed := v_changed || 'external_id'::text;
      ELSIF v_id.type = 'email' AND v_survivor_row.email IS NULL THEN
        v_survivor_row.email := v_id.value; v_changed := v_changed || 'email'::text;
      ELSIF v_id.type = 'phone' AND v_survivor_row.phone IS NULL THEN
        v_survivor_row.phone := v_id.value; v_changed := v_changed || 'phone'::text;
      END IF;
    ELSE
      SELECT * INTO v_loser FROM crm_contacts c WHERE c.id = v_owner;
      IF v_id.type = 'anonymous_id'
         AND COALESCE(v_loser.external_id, v_loser.email, v_loser.phone) IS NOT NULL THEN
        INSERT INTO identity_conflicts (business_id, event_id, contact_id, other_contact, type, value, reason)
        VALUES (p_business, p_event_id, v_survivor, v_owner, v_id.type, v_id.value,
                'anonymous_id owned by another identified contact; not merged');
        v_conflicts := v_conflicts + 1;
        CONTINUE;
      END IF;
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
      SELECT * INTO v_traits FROM app.apply_traits(v_survivor_row.traits, v_survivor_row.traits_at,
                                                   v_loser.traits, v_loser.traits_at, p_occurred_at);
      v_survivor_row.traits := v_traits.traits;
      v_survivor_row.traits_at := v_traits.traits_at;
      v_changed := v_changed || v_traits.changed;
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
  IF p_traits IS NOT NULL THEN
    SELECT * INTO v_traits FROM app.apply_traits(v_survivor_row.traits, v_survivor_row.traits_at,
                                                 p_traits, NULL, p_occurred_at);
    v_survivor_row.traits := v_traits.traits;
    v_survivor_row.traits_at := v_traits.traits_at;
    v_changed := v_changed || v_traits.changed;
  END IF;

  INSERT INTO crm_events (id, business_id, contact_id, type, props, contact, occurred_at)
  VALUES (p_event_id, p_business, v_survivor, p_type, p_props,
          jsonb_strip_nulls(jsonb_build_object('external_id', p_ext_id, 'email', p_email, 'phone', p_phone,
                                               'name', p_name, 'anonymous_id', p_anonymous_id,
                                               'previous_id', p_previous_id))
            || CASE WHEN p_traits IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('traits', p_traits) END,
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
    traits = v_survivor_row.traits,
    traits_at = v_survivor_row.traits_at,
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
REVOKE ALL ON FUNCTION
  app.resolve_contact(uuid, text, text, text, text, uuid, text, jsonb, timestamptz, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  app.resolve_contact(uuid, text, text, text, text, uuid, text, jsonb, timestamptz, text, text, jsonb) TO crm_service;

-- Several events in one transaction (SPEC 7 allows it "with the same result as one by one"): the worker sends a
-- chunk of events of different keys, in offset order per key. Issue 13: set-based, so Postgres CPU per event falls
-- with the chunk's size instead of paying ~15 statements (each an executor start, a plan, RLS checks) per event:
--  1. every advisory lock any event of the chunk takes (every identifier and event id) in ONE ascending call, so
--     two chunks never deadlock on them and no event of the chunk takes a new one later;
--  2. per business of the chunk (its tenant set): the owners of all its identifiers, row-locked at once in
--     ascending id order and re-read until stable (the rule of app.resolve_contact);
--  3. waves: two events CONFLICT when they name the same identifier or event id, or their identifiers have an owner
--     in common (owners as read in step 2); conflicts chain events into components. A component is closed: a
--     contact created in the chunk is met only by events naming its creator's identifiers, and a merge only joins
--     owners of the merging event's identifiers (pairwise conflicts are not enough: two events meeting only
--     through a contact a third one creates do not conflict directly). Wave k is the k-th event of each
--     component: a wave's events touch disjoint contacts and identifiers, so they commute (any order gives the
--     same result), and a component's events apply in chunk order. A wave's SIMPLE events (no
--     previous_id, not a redelivery, at most one owning contact and that one the survivor app.resolve_contact
--     would pick: no merge, no conflict row) are applied together, each kind of row in one statement
--     (app.resolve_simple_events); the others go through app.resolve_contact one by one, in chunk order.
-- Conflicting events therefore apply in chunk order (per key, offset order), and the result equals applying the
-- chunk one by one (contacts, identities, versions, conflicts, event and outbox rows; ids are generated either
-- way): resolve-contacts.integration.test.ts checks it with fast-check on random identity graphs, chunks running
-- concurrently included. Any error aborts the whole chunk; the worker then applies its events one by one, so a
-- failing event never takes its neighbours with it.
--
-- Returns one row per event, in input order. lock_wait_ms is the chunk's wait for its locks; locked_ms is how long
-- the locks had been held when this function returned (the worker adds the COMMIT).

-- Every table lookup below is a LATERAL subquery with LIMIT 1 (one row by a unique index anyway): the limit keeps
-- the planner from flattening it into a hash join over the whole table, which it picks for the 100 rows it
-- assumes a jsonb_to_recordset returns (measured: 25 ms per chunk at 12,000 contacts, growing with the table).
-- Step 3 for the simple events of one wave of one business (p_events: their rows from app.resolve_contacts, fields
-- already junk-filtered; the owners already row-locked). Returns the applied events' results.
CREATE OR REPLACE FUNCTION app.resolve_simple_events(p_business uuid, p_events jsonb)
RETURNS TABLE (n int, contact_id uuid, outcome text, outbox_rows int)
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_plan jsonb;
BEGIN
  -- What app.resolve_contact would do for each: the survivor (a new id when no contact owns an identifier), the
  -- identifiers to link (the unowned ones, in priority order), the contact's new fields and the changed fields.
  WITH ev AS MATERIALIZED (
    SELECT e.*, c.id AS owner_id, c.external_id AS c_ext, c.email AS c_email, c.phone AS c_phone,
           c.name AS c_name, c.name_at AS c_name_at, c.traits AS c_traits, c.traits_at AS c_traits_at
    FROM jsonb_to_recordset(p_events) AS e (
      n int, event_id uuid, ext text, email text, phone text, anon text, owner uuid,
      ext_owned boolean, email_owned boolean, phone_owned boolean, anon_owned boolean,
      name text, occurred_at timestamptz, traits jsonb)
    LEFT JOIN LATERAL (SELECT c.* FROM crm_contacts c WHERE c.id = e.owner LIMIT 1) AS c ON true
  ), planned AS MATERIALIZED (
    SELECT ev.n, ev.event_id, ev.owner_id IS NULL AS created, COALESCE(ev.owner_id, gen_random_uuid()) AS survivor,
      ev.occurred_at,
      CASE WHEN ev.c_ext IS NULL AND ev.ext IS NOT NULL AND NOT ev.ext_owned THEN ev.ext ELSE ev.c_ext END AS new_ext,
      CASE WHEN ev.c_email IS NULL AND ev.email IS NOT NULL AND NOT ev.email_owned THEN ev.email ELSE ev.c_email END
        AS new_email,
      CASE WHEN ev.c_phone IS NULL AND ev.phone IS NOT NULL AND NOT ev.phone_owned THEN ev.phone ELSE ev.c_phone END
        AS new_phone,
      nm.take AS name_taken, CASE WHEN nm.take THEN ev.name ELSE ev.c_name END AS new_name,
      CASE WHEN nm.take THEN ev.occurred_at ELSE ev.c_name_at END AS new_name_at,
      tr.traits AS new_traits, tr.traits_at AS new_traits_at,
      (SELECT jsonb_agg(jsonb_build_object('prio', l.prio, 'type', l.type, 'value', l.value) ORDER BY l.prio)
         FROM (VALUES (1, 'external_id', ev.ext, ev.ext_owned), (2, 'email', ev.email, ev.email_owned),
                      (3, 'phone', ev.phone, ev.phone_owned), (4, 'anonymous_id', ev.anon, ev.anon_owned))
           AS l (prio, type, value, owned)
         WHERE l.value IS NOT NULL AND NOT l.owned) AS links,
      (SELECT array_agg(DISTINCT f ORDER BY f) FROM unnest(
         ARRAY[CASE WHEN ev.ext IS NOT NULL AND NOT ev.ext_owned THEN 'identities.external_id' END,
               CASE WHEN ev.ext IS NOT NULL AND NOT ev.ext_owned AND ev.c_ext IS NULL THEN 'external_id' END,
               CASE WHEN ev.email IS NOT NULL AND NOT ev.email_owned THEN 'identities.email' END,
               CASE WHEN ev.email IS NOT NULL AND NOT ev.email_owned AND ev.c_email IS NULL THEN 'email' END,
               CASE WHEN ev.phone IS NOT NULL AND NOT ev.phone_owned THEN 'identities.phone' END,
               CASE WHEN ev.phone IS NOT NULL AND NOT ev.phone_owned AND ev.c_phone IS NULL THEN 'phone' END,
               CASE WHEN ev.anon IS NOT NULL AND NOT ev.anon_owned THEN 'identities.anonymous_id' END,
               CASE WHEN nm.take AND ev.c_name IS DISTINCT FROM ev.name THEN 'name' END]
         || tr.changed) AS f WHERE f IS NOT NULL) AS changed
    FROM ev
    CROSS JOIN LATERAL (SELECT ev.name IS NOT NULL AND (ev.c_name_at IS NULL OR ev.occurred_at > ev.c_name_at)
                          AS take) AS nm
    CROSS JOIN LATERAL (SELECT t.traits, t.traits_at, t.changed FROM app.apply_traits(
                          ev.c_traits, ev.c_traits_at, ev.traits, NULL, ev.occurred_at) AS t) AS tr
  )
  SELECT jsonb_agg(to_jsonb(planned) ORDER BY planned.n) INTO v_plan FROM planned;

  INSERT INTO crm_contacts (id, business_id, external_id, email, phone, name, name_at, traits, traits_at,
                            first_seen_at, last_seen_at)
  SELECT p.survivor, p_business, p.new_ext, p.new_email, p.new_phone, p.new_name, p.new_name_at, p.new_traits,
         p.new_traits_at, p.occurred_at, p.occurred_at
  FROM jsonb_to_recordset(v_plan) AS p (n int, survivor uuid, created boolean, new_ext text, new_email text,
    new_phone text, new_name text, new_name_at timestamptz, new_traits jsonb, new_traits_at jsonb,
    occurred_at timestamptz)
  WHERE p.created ORDER BY p.n;

  -- first/last_seen_at follow every event but are activity, not a contact change: no version, no outbox row.
  UPDATE crm_contacts c SET
    external_id = p.new_ext, email = p.new_email, phone = p.new_phone, name = p.new_name, name_at = p.new_name_at,
    traits = p.new_traits, traits_at = p.new_traits_at,
    first_seen_at = LEAST(c.first_seen_at, p.occurred_at), last_seen_at = GREATEST(c.last_seen_at, p.occurred_at),
    version = CASE WHEN p.changed IS NULL THEN c.version ELSE c.version + 1 END,
    updated_at = CASE WHEN p.changed IS NULL THEN c.updated_at ELSE now() END
  FROM jsonb_to_recordset(v_plan) AS p (survivor uuid, created boolean, new_ext text, new_email text,
    new_phone text, new_name text, new_name_at timestamptz, new_traits jsonb, new_traits_at jsonb,
    occurred_at timestamptz, changed text[])
  WHERE c.id = p.survivor AND NOT p.created;

  INSERT INTO contact_identities (business_id, type, value, contact_id)
  SELECT p_business, l.type, l.value, p.survivor
  FROM jsonb_to_recordset(v_plan) AS p (n int, survivor uuid, links jsonb)
  CROSS JOIN LATERAL jsonb_to_recordset(p.links) AS l (prio int, type text, value text)
  ORDER BY p.n, l.prio;

  INSERT INTO crm_events (id, business_id, contact_id, type, props, contact, occurred_at)
  SELECT e.event_id, p_business, p.survivor, e.type, e.props, e.contact, e.occurred_at
  FROM jsonb_to_recordset(p_events) AS e (n int, event_id uuid, type text, props jsonb, contact jsonb,
    occurred_at timestamptz)
  JOIN jsonb_to_recordset(v_plan) AS p (n int, survivor uuid) ON p.n = e.n
  ORDER BY e.n;

  -- The payload of app.contact_change_payload, built for all of them in one statement.
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id)
  SELECT 'contact', c.id::text, 'contact.' || x.change,
    CASE WHEN c.traits IS NOT NULL AND c.traits <> '{}'::jsonb
         THEN jsonb_set(x.payload, '{contact,traits}', c.traits) ELSE x.payload END,
    p_business
  FROM jsonb_to_recordset(v_plan) AS p (n int, event_id uuid, survivor uuid, created boolean, changed text[],
    occurred_at timestamptz)
  CROSS JOIN LATERAL (SELECT c.* FROM crm_contacts c WHERE c.id = p.survivor LIMIT 1) AS c
  CROSS JOIN LATERAL (SELECT CASE WHEN p.created THEN 'created' ELSE 'updated' END AS change) AS ch
  CROSS JOIN LATERAL (SELECT ch.change, jsonb_strip_nulls(jsonb_build_object(
    'contact_id', c.id,
    'business_id', c.business_id,
    'version', c.version,
    'change', ch.change,
    'changed_fields', to_jsonb(COALESCE(p.changed, ARRAY[]::text[])),
    'contact', jsonb_build_object(
      'external_id', c.external_id, 'email', c.email, 'phone', c.phone, 'name', c.name,
      'first_seen_at', c.first_seen_at, 'last_seen_at', c.last_seen_at),
    'identities', COALESCE((SELECT jsonb_agg(jsonb_build_object('type', i.type, 'value', i.value)
                                             ORDER BY i.type, i.value)
                            FROM contact_identities i WHERE i.contact_id = c.id AND i.type <> 'anonymous_id'),
                           '[]'::jsonb),
    'anonymous_ids', (SELECT jsonb_agg(i.value ORDER BY i.value)
                      FROM contact_identities i WHERE i.contact_id = c.id AND i.type = 'anonymous_id'),
    'merged_from', NULL::jsonb,
    'merged_into', NULL::jsonb,
    'cause_event_id', p.event_id,
    'occurred_at', p.occurred_at)) AS payload) AS x
  WHERE p.created OR p.changed IS NOT NULL
  ORDER BY p.n;

  RETURN QUERY
    SELECT p.n, p.survivor,
      CASE WHEN p.created THEN 'created' WHEN p.changed IS NOT NULL THEN 'updated' ELSE 'unchanged' END,
      CASE WHEN p.created OR p.changed IS NOT NULL THEN 1 ELSE 0 END
    FROM jsonb_to_recordset(v_plan) AS p (n int, survivor uuid, created boolean, changed text[]);
END $$;
REVOKE ALL ON FUNCTION app.resolve_simple_events(uuid, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.resolve_simple_events(uuid, jsonb) TO crm_service;

CREATE OR REPLACE FUNCTION app.resolve_contacts(p_events jsonb)
RETURNS TABLE (event_id uuid, contact_id uuid, outcome text, outbox_rows int, merged int, conflicts int,
               lock_wait_ms double precision, locked_ms double precision)
LANGUAGE plpgsql SET search_path = public, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
  v_count int := jsonb_array_length(p_events);
  v_before_locks timestamptz := clock_timestamp();
  v_locked_at timestamptz;
  v_business uuid;
  v_junk text[];
  v_group jsonb;
  v_owners uuid[];
  v_row_locked uuid[];
  v_to_lock uuid[];
  v_stable boolean;
  v_key_n int[];
  v_key text[];
  v_rank_n int[];
  v_rank int[];
  v_k int;
  v_wave int[];
  v_n int;
  v_simple jsonb;
  v_result record;
  v_event jsonb;
  v_contacts uuid[] := array_fill(NULL::uuid, ARRAY[v_count]);
  v_outcomes text[] := array_fill(NULL::text, ARRAY[v_count]);
  v_outbox int[] := array_fill(0, ARRAY[v_count]);
  v_merged int[] := array_fill(0, ARRAY[v_count]);
  v_conflicts int[] := array_fill(0, ARRAY[v_count]);
  v_waits double precision[] := array_fill(0::double precision, ARRAY[v_count]);
  v_end timestamptz;
BEGIN
  IF v_count = 0 THEN
    RETURN;
  END IF;
  -- 1. Every lock any event of the chunk takes in app.resolve_contact (a superset: raw values, before the junk
  -- filter), ascending, in one statement.
  PERFORM pg_advisory_xact_lock(k)
  FROM (SELECT DISTINCT app.identity_lock_key(e.business_id, ids.t, ids.v) AS k
        FROM jsonb_to_recordset(p_events) AS e (event_id uuid, business_id uuid, external_id text, email text,
                                                phone text, anonymous_id text, previous_id text)
        CROSS JOIN LATERAL (VALUES ('event', e.event_id::text), ('external_id', NULLIF(e.external_id, '')),
                                   ('email', NULLIF(e.email, '')), ('phone', NULLIF(e.phone, '')),
                                   ('anonymous_id', NULLIF(e.anonymous_id, '')),
                                   ('anonymous_id', NULLIF(e.previous_id, '')),
                                   ('external_id', NULLIF(e.previous_id, ''))) AS ids (t, v)
        WHERE ids.v IS NOT NULL
        ORDER BY k) AS keys;
  v_locked_at := clock_timestamp();

  -- 2 and 3, per business, in order of first appearance.
  FOR v_business IN
    SELECT b.business_id FROM (
      SELECT (x.e ->> 'business_id')::uuid AS business_id, min(x.n) AS first
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x (e, n) GROUP BY 1) AS b
    ORDER BY b.first
  LOOP
    PERFORM set_config('app.business_id', v_business::text, true);
    SELECT ARRAY(SELECT lower(normalize(j, NFKC)) FROM unnest(b.junk_values) AS j) INTO v_junk
      FROM businesses b WHERE b.id = v_business;
    IF NOT FOUND THEN
      v_junk := NULL; -- an unknown business: app.resolve_contact raises the error for its first event below
    ELSE
      v_junk := COALESCE(v_junk, ARRAY[]::text[]);
    END IF;
    -- The business's events with their identifiers as app.resolve_contact filters them.
    WITH raw AS (
      SELECT x.n::int AS n, (x.e ->> 'event_id')::uuid AS event_id, x.e,
        NULLIF(x.e ->> 'external_id', '') AS ext, NULLIF(x.e ->> 'email', '') AS email,
        NULLIF(x.e ->> 'phone', '') AS phone, NULLIF(x.e ->> 'anonymous_id', '') AS anon,
        NULLIF(x.e ->> 'previous_id', '') AS prev
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x (e, n)
      WHERE (x.e ->> 'business_id')::uuid = v_business
    ), filtered AS (
      SELECT r.n, r.event_id, r.e,
        CASE WHEN lower(normalize(r.ext, NFKC)) = ANY (v_junk) THEN NULL ELSE r.ext END AS ext,
        CASE WHEN lower(normalize(r.email, NFKC)) = ANY (v_junk) THEN NULL ELSE r.email END AS email,
        CASE WHEN lower(normalize(r.phone, NFKC)) = ANY (v_junk) THEN NULL ELSE r.phone END AS phone,
        CASE WHEN lower(normalize(r.anon, NFKC)) = ANY (v_junk) THEN NULL ELSE r.anon END AS anon,
        CASE WHEN lower(normalize(r.prev, NFKC)) = ANY (v_junk) THEN NULL ELSE r.prev END AS prev,
        count(*) OVER (PARTITION BY r.event_id) AS copies
      FROM raw r
    )
    SELECT jsonb_agg(jsonb_build_object('n', f.n, 'event_id', f.event_id, 'copies', f.copies, 'ext', f.ext,
      'email', f.email, 'phone', f.phone, 'anon', f.anon,
      'prev', CASE WHEN f.prev = f.ext OR f.prev = f.anon THEN NULL ELSE f.prev END,
      'name', f.e ->> 'name', 'occurred_at', (f.e ->> 'occurred_at')::timestamptz, 'traits', f.e -> 'traits',
      'type', f.e ->> 'type', 'props', f.e -> 'props',
      'contact', jsonb_strip_nulls(jsonb_build_object('external_id', f.e ->> 'external_id',
                   'email', f.e ->> 'email', 'phone', f.e ->> 'phone', 'name', f.e ->> 'name',
                   'anonymous_id', f.e ->> 'anonymous_id', 'previous_id', f.e ->> 'previous_id'))
                 || CASE WHEN f.e -> 'traits' IS NULL THEN '{}'::jsonb
                         ELSE jsonb_build_object('traits', f.e -> 'traits') END) ORDER BY f.n)
      INTO v_group FROM filtered f;

    IF v_junk IS NULL THEN
      v_rank_n := ARRAY[]::int[];
      v_rank := ARRAY[]::int[];
    ELSE
      -- 2. The owners of every identifier of the group, row-locked ascending, re-read until stable.
      v_row_locked := ARRAY[]::uuid[];
      v_stable := false;
      FOR v_round IN 1..8 LOOP
        SELECT COALESCE(array_agg(DISTINCT i.contact_id), ARRAY[]::uuid[]) INTO v_owners
        FROM jsonb_to_recordset(v_group) AS g (ext text, email text, phone text, anon text, prev text)
        CROSS JOIN LATERAL (VALUES ('external_id', g.ext), ('email', g.email), ('phone', g.phone),
                                   ('anonymous_id', g.anon), ('anonymous_id', g.prev), ('external_id', g.prev))
          AS ids (t, v)
        CROSS JOIN LATERAL (SELECT i.contact_id FROM contact_identities i
                            WHERE i.business_id = v_business AND i.type = ids.t AND i.value = ids.v LIMIT 1) AS i;
        v_to_lock := ARRAY(SELECT o FROM unnest(v_owners) AS o WHERE NOT (o = ANY (v_row_locked)));
        IF cardinality(v_to_lock) = 0 THEN
          v_stable := true;
          EXIT;
        END IF;
        PERFORM 1 FROM crm_contacts c WHERE c.id = ANY (v_to_lock) ORDER BY c.id FOR UPDATE;
        v_row_locked := v_row_locked || v_to_lock;
      END LOOP;
      IF NOT v_stable THEN
        RAISE EXCEPTION 'identity owners kept moving for a chunk of business %', v_business USING ERRCODE = '40001';
      END IF;

      -- 3. What each event conflicts on: its identifiers, its event id, and the owners read in step 2.
      SELECT array_agg(k.n ORDER BY k.n), array_agg(k.key ORDER BY k.n)
        INTO v_key_n, v_key
      FROM (
        SELECT DISTINCT g.n, x.key
        FROM jsonb_to_recordset(v_group) AS g (n int, event_id uuid, ext text, email text, phone text, anon text,
                                               prev text)
        CROSS JOIN LATERAL (VALUES ('event', g.event_id::text), ('external_id', g.ext), ('email', g.email),
                                   ('phone', g.phone), ('anonymous_id', g.anon), ('anonymous_id', g.prev),
                                   ('external_id', g.prev)) AS ids (t, v)
        LEFT JOIN LATERAL (SELECT i.contact_id FROM contact_identities i
                           WHERE ids.t <> 'event' AND i.business_id = v_business AND i.type = ids.t
                             AND i.value = ids.v LIMIT 1) AS i ON true
        CROSS JOIN LATERAL (VALUES (ids.t || ':' || ids.v), ('owner:' || i.contact_id::text)) AS x (key)
        WHERE ids.v IS NOT NULL AND x.key IS NOT NULL) AS k;
      -- Conflicting events, directly or through others, form a component (a contact one event creates can only
      -- be met by events naming its identifiers, a merge only joins owners of the merging event's identifiers, so
      -- every contact an event of a component touches stays in it). Wave k is the k-th event of each component.
      WITH RECURSIVE k AS (
        SELECT * FROM unnest(v_key_n, v_key) AS k (n, key)
      ), pairs AS (
        SELECT DISTINCT a.n AS a, b.n AS b FROM k AS a JOIN k AS b ON b.key = a.key AND b.n <> a.n
      ), reach (n, m) AS (
        SELECT DISTINCT k.n, k.n FROM k
        UNION
        SELECT r.n, p.b FROM reach AS r JOIN pairs AS p ON p.a = r.m
      ), component AS (
        SELECT r.n, min(r.m) AS c FROM reach AS r GROUP BY r.n
      )
      SELECT array_agg(x.n ORDER BY x.n), array_agg(x.rank ORDER BY x.n) INTO v_rank_n, v_rank
      FROM (SELECT c.n, row_number() OVER (PARTITION BY c.c ORDER BY c.n)::int AS rank FROM component AS c) AS x;
    END IF;

    FOR v_k IN 1 .. COALESCE((SELECT max(r) FROM unnest(v_rank) AS r), 0) LOOP
      v_wave := ARRAY(SELECT x.n FROM unnest(v_rank_n, v_rank) AS x (n, r) WHERE x.r = v_k ORDER BY x.n);
      -- Its simple events, with the owner of each identifier (read now: earlier waves may have linked some).
      WITH g AS MATERIALIZED (
        SELECT g.* FROM jsonb_to_recordset(v_group) AS g (n int, event_id uuid, copies int, ext text, email text,
          phone text, anon text, prev text, name text, occurred_at timestamptz, traits jsonb, type text,
          props jsonb, contact jsonb)
        WHERE g.n = ANY (v_wave) AND g.prev IS NULL AND g.copies = 1
          -- a redelivery: app.resolve_contact answers `duplicate` (a scalar subquery: an index probe per event,
          -- never an anti-join over the events table)
          AND (SELECT e.id FROM crm_events e WHERE e.id = g.event_id) IS NULL
      ), owned AS MATERIALIZED (
        SELECT g.*,
          (SELECT i.contact_id FROM contact_identities i
            WHERE i.business_id = v_business AND i.type = 'external_id' AND i.value = g.ext) AS ext_owner,
          (SELECT i.contact_id FROM contact_identities i
            WHERE i.business_id = v_business AND i.type = 'email' AND i.value = g.email) AS email_owner,
          (SELECT i.contact_id FROM contact_identities i
            WHERE i.business_id = v_business AND i.type = 'phone' AND i.value = g.phone) AS phone_owner,
          (SELECT i.contact_id FROM contact_identities i
            WHERE i.business_id = v_business AND i.type = 'anonymous_id' AND i.value = g.anon) AS anon_owner
        FROM g
      ), simple AS MATERIALIZED (
        SELECT o.*, COALESCE(o.ext_owner, o.email_owner, o.phone_owner, o.anon_owner) AS owner
        FROM owned o
        WHERE (SELECT count(DISTINCT w) FROM unnest(ARRAY[o.ext_owner, o.email_owner, o.phone_owner, o.anon_owner])
                 AS w) <= 1
      )
      SELECT jsonb_agg(jsonb_build_object('n', s.n, 'event_id', s.event_id, 'ext', s.ext, 'email', s.email,
        'phone', s.phone, 'anon', s.anon, 'owner', s.owner,
        'ext_owned', s.ext_owner IS NOT NULL, 'email_owned', s.email_owner IS NOT NULL,
        'phone_owned', s.phone_owner IS NOT NULL, 'anon_owned', s.anon_owner IS NOT NULL,
        'name', s.name, 'occurred_at', s.occurred_at, 'traits', s.traits, 'type', s.type, 'props', s.props,
        'contact', s.contact))
        INTO v_simple
      FROM simple s
      LEFT JOIN LATERAL (SELECT c.external_id, c.email, c.phone FROM crm_contacts c WHERE c.id = s.owner LIMIT 1)
        AS c ON true
      -- the survivor app.resolve_contact picks is this owner (or a new contact when there is none)
      WHERE s.owner IS NULL
         OR s.ext_owner IS NOT NULL
         OR (COALESCE(s.email_owner, s.phone_owner) IS NOT NULL AND (s.ext IS NULL OR c.external_id IS NULL))
         OR (s.anon_owner IS NOT NULL AND COALESCE(s.ext, s.email, s.phone) IS NULL)
         OR (s.anon_owner IS NOT NULL AND COALESCE(c.external_id, c.email, c.phone) IS NULL);

      IF v_simple IS NOT NULL THEN
        FOR v_result IN SELECT * FROM app.resolve_simple_events(v_business, v_simple) LOOP
          v_contacts[v_result.n] := v_result.contact_id;
          v_outcomes[v_result.n] := v_result.outcome;
          v_outbox[v_result.n] := v_result.outbox_rows;
        END LOOP;
      END IF;
      -- The wave's other events one by one, in chunk order (their locks are held already).
      FOREACH v_n IN ARRAY v_wave LOOP
        CONTINUE WHEN v_outcomes[v_n] IS NOT NULL;
        v_event := p_events -> (v_n - 1);
        SELECT * INTO STRICT v_result FROM app.resolve_contact(
          v_business, v_event ->> 'email', v_event ->> 'phone', v_event ->> 'external_id',
          v_event ->> 'name', (v_event ->> 'event_id')::uuid, v_event ->> 'type', v_event -> 'props',
          (v_event ->> 'occurred_at')::timestamptz, v_event ->> 'anonymous_id', v_event ->> 'previous_id',
          v_event -> 'traits');
        v_contacts[v_n] := v_result.contact_id;
        v_outcomes[v_n] := v_result.outcome;
        v_outbox[v_n] := v_result.outbox_rows;
        v_merged[v_n] := v_result.merged;
        v_conflicts[v_n] := v_result.conflicts;
        v_waits[v_n] := v_result.lock_wait_ms;
      END LOOP;
    END LOOP;
  END LOOP;

  -- An unknown business's events: app.resolve_contact raises its error.
  FOR i IN 1 .. v_count LOOP
    CONTINUE WHEN v_outcomes[i] IS NOT NULL;
    v_event := p_events -> (i - 1);
    PERFORM set_config('app.business_id', v_event ->> 'business_id', true);
    PERFORM app.resolve_contact((v_event ->> 'business_id')::uuid, NULL, NULL, NULL, NULL,
                                (v_event ->> 'event_id')::uuid);
  END LOOP;
  v_end := clock_timestamp();
  RETURN QUERY
    SELECT (p_events -> (n - 1) ->> 'event_id')::uuid, v_contacts[n], v_outcomes[n], v_outbox[n], v_merged[n],
           v_conflicts[n],
           (extract(epoch FROM v_locked_at - v_before_locks) * 1000)::double precision + v_waits[n],
           (extract(epoch FROM v_end - v_locked_at) * 1000)::double precision
    FROM generate_series(1, v_count) AS n
    ORDER BY n;
END $$;

REVOKE ALL ON FUNCTION app.resolve_contacts(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.resolve_contacts(jsonb) TO crm_service;
