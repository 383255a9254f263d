import { createHmac } from "node:crypto";
import { type CountryCode, parsePhoneNumberFromString } from "libphonenumber-js/max";

/** The identifier kinds of SPEC 7 and 11, highest priority first. */
export const IDENTIFIER_PRIORITY = ["external_id", "email", "phone", "anonymous_id"] as const;
export type IdentifierType = (typeof IDENTIFIER_PRIORITY)[number];

export type Normalized<T> = { ok: true; value: T } | { ok: false; reason: string };

// Pragmatic RFC 5322 subset: one @, a dot-atom-ish local part, a domain with a dot and a 2+ letter TLD.
const EMAIL =
  /^[^\s@"(),:;<>[\\\]]{1,64}@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?\.)+[\p{L}]{2,63}$/u;

// Format characters (zero-width spaces and joiners, bidi marks and overrides, soft hyphen, BOM) are invisible:
// left in, `bo\u200Bb@x.com` and `bob@x.com` would be two people who look like one.
const FORMAT_CHARACTERS = /\p{Cf}/gu;
const CONTROL_CHARACTER = /\p{Cc}/u;

/**
 * The visible text of an identifier: format characters removed, then trimmed. Control characters (NUL, tab,
 * newline, C1) are refused rather than removed: they are never part of an identifier a person typed.
 */
function visible(raw: string): Normalized<string> {
  if (CONTROL_CHARACTER.test(raw) || !raw.isWellFormed()) {
    return { ok: false, reason: "must not contain control characters or lone surrogates" };
  }
  return { ok: true, value: raw.replace(FORMAT_CHARACTERS, "").trim() };
}

/** Email: format characters removed, trim, Unicode NFKC, lowercase, syntax check (SPEC 7.1). */
export function normalizeEmail(raw: string): Normalized<string> {
  const text = visible(raw);
  if (!text.ok) return text;
  const value = text.value.normalize("NFKC").toLowerCase();
  if (value.length > 254 || !EMAIL.test(value)) return { ok: false, reason: "not a valid email address" };
  return { ok: true, value };
}

/**
 * Phone: parsed with libphonenumber using the business's default country, stored as E.164. "Possible" numbers
 * (right length and shape for the country) are accepted, not only assigned ranges: +15551234567 must pass.
 */
export function normalizePhone(raw: string, defaultCountry = "US"): Normalized<string> {
  const text = visible(raw);
  if (!text.ok) return text;
  const parsed = parsePhoneNumberFromString(text.value, defaultCountry.toUpperCase() as CountryCode);
  if (!parsed?.isPossible()) return { ok: false, reason: "not a possible phone number" };
  const value = parsed.number;
  if (!/^\+[1-9]\d{6,14}$/.test(value)) return { ok: false, reason: "not a possible phone number" };
  return { ok: true, value };
}

/** external_id: format characters removed, trimmed, 1..255 characters, case-sensitive. */
export function normalizeExternalId(raw: string): Normalized<string> {
  const text = visible(raw);
  if (!text.ok) return text;
  const value = text.value;
  if (value.length < 1 || value.length > 255) return { ok: false, reason: "must be 1..255 characters" };
  return { ok: true, value };
}

/**
 * anonymous_id (a device or browser id, Segment's anonymousId) and an alias's previous_id: as external_id,
 * format characters removed, trimmed, 1..255 characters, case-sensitive.
 */
export const normalizeAnonymousId = normalizeExternalId;

/** Every identifier field an event's contact may carry (previous_id: an alias's former id). */
export type IdentifierField = "external_id" | "email" | "phone" | "anonymous_id" | "previous_id";

/**
 * Normalizes whichever identifiers `contact` carries (phone with the business's `country`): the normalized
 * values, and one problem per field that is invalid. The edge turns problems into a 400, the worker's decoder
 * into a dead letter.
 */
export function normalizeIdentifiers(
  contact: Partial<Record<IdentifierField, string>>,
  country?: string,
): {
  values: Partial<Record<IdentifierField, string>>;
  problems: { field: IdentifierField; reason: string }[];
} {
  const normalizers: Record<IdentifierField, (raw: string) => Normalized<string>> = {
    external_id: normalizeExternalId,
    email: normalizeEmail,
    phone: (raw) => normalizePhone(raw, country),
    anonymous_id: normalizeAnonymousId,
    previous_id: normalizeAnonymousId,
  };
  const values: Partial<Record<IdentifierField, string>> = {};
  const problems: { field: IdentifierField; reason: string }[] = [];
  for (const field of Object.keys(normalizers) as IdentifierField[]) {
    const raw = contact[field];
    if (raw === undefined) continue;
    const result = normalizers[field](raw);
    if (result.ok) values[field] = result.value;
    else problems.push({ field, reason: result.reason });
  }
  return { values, problems };
}

export interface ContactIdentifiers {
  external_id?: string | undefined;
  email?: string | undefined;
  phone?: string | undefined;
  anonymous_id?: string | undefined;
}

/**
 * The Kafka key of an event (SPEC 5): `business:kind:normalized` of its highest-priority identifier, so events
 * about one person usually land on one partition in order (`anon` for anonymous_id, the lowest priority);
 * `business:event:<id>` when it carries none.
 * Correctness never depends on it (the resolver locks), only locality.
 */
export function partitionKey(businessId: string, contact: ContactIdentifiers, eventId: string): string {
  if (contact.external_id) return `${businessId}:ext:${contact.external_id}`;
  if (contact.email) return `${businessId}:email:${contact.email}`;
  if (contact.phone) return `${businessId}:phone:${contact.phone}`;
  if (contact.anonymous_id) return `${businessId}:anon:${contact.anonymous_id}`;
  return `${businessId}:event:${eventId}`;
}

/** The identifier types an erasure suppresses (contact_identities.type). */
export type SuppressedType = IdentifierType;

/**
 * The suppression-list entry of one normalized identifier of a business (issue 18): HMAC-SHA256, keyed with the
 * deployment's ERASURE_HASH_SECRET, of `business_id \n type \n value`, as lowercase hex. Keyed, so the list cannot
 * be checked against candidate emails without the secret; per business, so one email is unlinkable across tenants.
 */
export function suppressionHash(
  secret: string,
  businessId: string,
  type: SuppressedType,
  value: string,
): string {
  return createHmac("sha256", secret).update(`${businessId.toLowerCase()}\n${type}\n${value}`).digest("hex");
}

/**
 * What the worker checks for an event's normalized contact: each identifier under its type, and an alias's
 * previous_id under the two types the resolver reads it as (anonymous_id, then external_id), with its hash.
 */
export function eventSuppressionEntries(
  secret: string,
  businessId: string,
  contact: Partial<Record<IdentifierField, string>>,
): { type: SuppressedType; value: string; hash: string }[] {
  const entries: { type: SuppressedType; value: string }[] = [];
  for (const type of IDENTIFIER_PRIORITY) {
    const value = contact[type];
    if (value) entries.push({ type, value });
  }
  if (contact.previous_id) {
    entries.push({ type: "anonymous_id", value: contact.previous_id });
    entries.push({ type: "external_id", value: contact.previous_id });
  }
  return entries.map((entry) => ({
    ...entry,
    hash: suppressionHash(secret, businessId, entry.type, entry.value),
  }));
}
