-- The ops console's database functions (issue 19). Repeatable. The console runs as its own role crm_console
-- (migration 056), under RLS like every service: a contact's card is read in a transaction of that contact's business. These definer functions answer only
-- what must be asked before a tenant is known (which business holds this contact or identifier) and write or read
-- the console's own audit trail (console_audit, migration 055). The console decides whose businesses a caller may
-- pass (an owner: only their own); the functions never widen what they are given.

-- Which contacts own these identifiers, in the given businesses (NULL: every business, the operator's search).
CREATE OR REPLACE FUNCTION app.console_find_identities(p_types text[], p_values text[], p_businesses uuid[])
RETURNS TABLE (business_id uuid, contact_id uuid, type text, value text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  -- One probe of the (business_id, type, value) index per business and pair: the operator's search across every
  -- business must not scan the table (there is no index without business_id, and adding one would cost every
  -- identity the worker writes).
  -- OFFSET 0 keeps the planner from flattening the probe into a hash join over the whole table.
  SELECT b.id, i.contact_id, i.type, i.value
  FROM businesses b
  CROSS JOIN unnest(p_types, p_values) AS q(type, value)
  CROSS JOIN LATERAL (
    SELECT i.contact_id, i.type, i.value FROM contact_identities i
    WHERE i.business_id = b.id AND i.type = q.type AND i.value = q.value
    OFFSET 0
  ) i
  WHERE p_businesses IS NULL OR b.id = ANY (p_businesses)
  LIMIT 50
$$;
REVOKE ALL ON FUNCTION app.console_find_identities(text[], text[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.console_find_identities(text[], text[], uuid[]) TO crm_console;

-- The business of a contact, if it is one of the given businesses (NULL: any).
CREATE OR REPLACE FUNCTION app.console_contact_business(p_contact uuid, p_businesses uuid[])
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT c.business_id FROM crm_contacts c
  WHERE c.id = p_contact AND (p_businesses IS NULL OR c.business_id = ANY (p_businesses))
$$;
REVOKE ALL ON FUNCTION app.console_contact_business(uuid, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.console_contact_business(uuid, uuid[]) TO crm_console;

-- The default countries of the given businesses (NULL: every business): a phone written in national format is
-- normalized with each of them, as ingest normalizes it with the event's business's country.
CREATE OR REPLACE FUNCTION app.console_countries(p_businesses uuid[])
RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT DISTINCT b.default_country::text FROM businesses b
  WHERE p_businesses IS NULL OR b.id = ANY (p_businesses)
  LIMIT 50
$$;
REVOKE ALL ON FUNCTION app.console_countries(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.console_countries(uuid[]) TO crm_console;

-- Records one action. A contact must belong to the business named with it (a forged pair is refused).
CREATE OR REPLACE FUNCTION app.console_record(p_actor text, p_action text, p_business uuid, p_contact uuid,
                                              p_target text, p_detail jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE v_id bigint;
BEGIN
  IF p_contact IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM crm_contacts c WHERE c.id = p_contact AND c.business_id IS NOT DISTINCT FROM p_business) THEN
    RAISE EXCEPTION 'contact % is not of business %', p_contact, p_business USING ERRCODE = '42501';
  END IF;
  INSERT INTO console_audit (actor, action, business_id, contact_id, target, detail)
  VALUES (p_actor, p_action, p_business, p_contact, p_target, COALESCE(p_detail, '{}'))
  RETURNING id INTO v_id;
  RETURN v_id;
END $$;
REVOKE ALL ON FUNCTION app.console_record(text, text, uuid, uuid, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.console_record(text, text, uuid, uuid, text, jsonb) TO crm_console;

-- The trail, newest first: of the given businesses (NULL: all, entries without a business included), optionally of
-- given targets only (the dead-letter page asks for the entries of the messages it shows).
CREATE OR REPLACE FUNCTION app.console_audit_list(p_businesses uuid[], p_targets text[], p_limit int)
RETURNS TABLE (id bigint, at timestamptz, actor text, action text, business_id uuid, contact_id uuid,
               target text, detail jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT a.id, a.at, a.actor, a.action, a.business_id, a.contact_id, a.target, a.detail
  FROM console_audit a
  WHERE (p_businesses IS NULL OR a.business_id = ANY (p_businesses))
    AND (p_targets IS NULL OR a.target = ANY (p_targets))
  ORDER BY a.at DESC, a.id DESC
  LIMIT LEAST(GREATEST(p_limit, 1), 1000)
$$;
REVOKE ALL ON FUNCTION app.console_audit_list(uuid[], text[], int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.console_audit_list(uuid[], text[], int) TO crm_console;

-- Only the console calls these (a database that granted them to the services' role before 056 takes that back).
REVOKE ALL ON FUNCTION app.console_find_identities(text[], text[], uuid[]), app.console_contact_business(uuid, uuid[]),
  app.console_countries(uuid[]), app.console_record(text, text, uuid, uuid, text, jsonb),
  app.console_audit_list(uuid[], text[], int) FROM crm_service;

-- Which businesses a signed-in user owns or belongs to (infra/sql/30_ingest_api.sql), as at ingest.
GRANT EXECUTE ON FUNCTION app.user_businesses(uuid) TO crm_console;

-- What other parts record about a contact, shown on its card where their tables exist (segments, automations).
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['segment_memberships', 'segment_definitions', 'automation_messages',
                           'automation_deliveries', 'automation_endpoints']
  LOOP
    IF to_regclass(t) IS NOT NULL THEN
      EXECUTE format('GRANT SELECT ON %I TO crm_console', t);
    END IF;
  END LOOP;
END $$;
