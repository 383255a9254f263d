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
-- chunk of events whose keys differ, in offset order per key, and this applies them one after the other through
-- app.resolve_contact, each under its own tenant. On this machine a transaction of ten events costs about half
-- as much Postgres CPU per event as ten transactions (pgbench, same function): BEGIN, the tenant, the statement
-- parse and the COMMIT are paid once. Any error aborts the whole chunk; the worker then applies its events one
-- by one, so a failing event never takes its neighbours with it, and deadlocks between chunks (locks of several
-- events are taken in event order, not globally ascending) only cost a retry.
--
-- Returns one row per event, in input order. lock_wait_ms is the event's wait for its locks; locked_ms is how
-- long its locks had been held when this function returned (the worker adds the COMMIT).
CREATE OR REPLACE FUNCTION app.resolve_contacts(p_events jsonb)
RETURNS TABLE (event_id uuid, contact_id uuid, outcome text, outbox_rows int, merged int, conflicts int,
               lock_wait_ms double precision, locked_ms double precision)
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_event jsonb;
  v_result record;
  v_ids uuid[] := ARRAY[]::uuid[];
  v_contacts uuid[] := ARRAY[]::uuid[];
  v_outcomes text[] := ARRAY[]::text[];
  v_outbox int[] := ARRAY[]::int[];
  v_merged int[] := ARRAY[]::int[];
  v_conflicts int[] := ARRAY[]::int[];
  v_waits double precision[] := ARRAY[]::double precision[];
  v_held double precision[] := ARRAY[]::double precision[];
  v_done timestamptz[] := ARRAY[]::timestamptz[];
  v_end timestamptz;
BEGIN
  FOR i IN 0 .. jsonb_array_length(p_events) - 1 LOOP
    v_event := p_events -> i;
    PERFORM set_config('app.business_id', v_event ->> 'business_id', true);
    SELECT * INTO STRICT v_result FROM app.resolve_contact(
      (v_event ->> 'business_id')::uuid, v_event ->> 'email', v_event ->> 'phone', v_event ->> 'external_id',
      v_event ->> 'name', (v_event ->> 'event_id')::uuid, v_event ->> 'type', v_event -> 'props',
      (v_event ->> 'occurred_at')::timestamptz, v_event ->> 'anonymous_id', v_event ->> 'previous_id',
      v_event -> 'traits');
    v_ids := v_ids || (v_event ->> 'event_id')::uuid;
    v_contacts := v_contacts || v_result.contact_id;
    v_outcomes := v_outcomes || v_result.outcome;
    v_outbox := v_outbox || v_result.outbox_rows;
    v_merged := v_merged || v_result.merged;
    v_conflicts := v_conflicts || v_result.conflicts;
    v_waits := v_waits || v_result.lock_wait_ms;
    v_held := v_held || v_result.locked_ms;
    v_done := v_done || clock_timestamp();
  END LOOP;
  v_end := clock_timestamp();
  RETURN QUERY
    SELECT v_ids[n], v_contacts[n], v_outcomes[n], v_outbox[n], v_merged[n], v_conflicts[n], v_waits[n],
           v_held[n] + (extract(epoch FROM v_end - v_done[n]) * 1000)::double precision
    FROM generate_series(1, cardinality(v_ids)) AS n
    ORDER BY n;
END $$;

REVOKE ALL ON FUNCTION app.resolve_contacts(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.resolve_contacts(jsonb) TO crm_service;
