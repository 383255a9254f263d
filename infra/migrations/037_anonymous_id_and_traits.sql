-- Anonymous visitors and traits (issue 15, SPEC 11 "Identity types" and "Traits"). Schema only; the resolution that
-- uses it is infra/sql/20_resolve_contact.sql.

-- anonymous_id: the lowest-priority identity type (after phone). Its values are 1..255 characters, as external_id.
ALTER TABLE contact_identities DROP CONSTRAINT contact_identities_type_check;
ALTER TABLE contact_identities ADD CONSTRAINT contact_identities_type_check
  CHECK (type IN ('external_id', 'email', 'phone', 'anonymous_id'));

-- Traits: a JSON object per contact, latest occurred_at wins PER KEY. traits_at maps each key of traits to the
-- occurred_at of the event that set it (an ISO 8601 string), so a late event never overwrites a newer trait and a
-- merge keeps, key by key, the newer value of the two contacts. One jsonb beside the other (not a {value, at}
-- pair per key) so that `traits` is the object readers and segments see, unwrapped.
ALTER TABLE crm_contacts
  ADD COLUMN traits    jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN traits_at jsonb NOT NULL DEFAULT '{}',
  ADD CONSTRAINT crm_contacts_traits_object CHECK (jsonb_typeof(traits) = 'object' AND jsonb_typeof(traits_at) = 'object');
