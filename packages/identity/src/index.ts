import { type CountryCode, parsePhoneNumberFromString } from "libphonenumber-js/max";

/** The identifier kinds of SPEC 7, highest priority first. */
export const IDENTIFIER_PRIORITY = ["external_id", "email", "phone"] as const;
export type IdentifierType = (typeof IDENTIFIER_PRIORITY)[number];

export type Normalized<T> = { ok: true; value: T } | { ok: false; reason: string };

// Pragmatic RFC 5322 subset: one @, a dot-atom-ish local part, a domain with a dot and a 2+ letter TLD.
const EMAIL =
  /^[^\s@"(),:;<>[\\\]]{1,64}@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?\.)+[\p{L}]{2,63}$/u;

/** Email: trim, Unicode NFKC, lowercase, syntax check (SPEC 7.1). */
export function normalizeEmail(raw: string): Normalized<string> {
  const value = raw.trim().normalize("NFKC").toLowerCase();
  if (value.length > 254 || !EMAIL.test(value)) return { ok: false, reason: "not a valid email address" };
  return { ok: true, value };
}

/**
 * Phone: parsed with libphonenumber using the business's default country, stored as E.164. "Possible" numbers
 * (right length and shape for the country) are accepted, not only assigned ranges: +15551234567 must pass.
 */
export function normalizePhone(raw: string, defaultCountry = "US"): Normalized<string> {
  const parsed = parsePhoneNumberFromString(raw.trim(), defaultCountry.toUpperCase() as CountryCode);
  if (!parsed?.isPossible()) return { ok: false, reason: "not a possible phone number" };
  const value = parsed.number;
  if (!/^\+[1-9]\d{6,14}$/.test(value)) return { ok: false, reason: "not a possible phone number" };
  return { ok: true, value };
}

/** external_id: trimmed, 1..255 characters, case-sensitive. */
export function normalizeExternalId(raw: string): Normalized<string> {
  const value = raw.trim();
  if (value.length < 1 || value.length > 255) return { ok: false, reason: "must be 1..255 characters" };
  return { ok: true, value };
}

export interface ContactIdentifiers {
  external_id?: string | undefined;
  email?: string | undefined;
  phone?: string | undefined;
}

/**
 * The Kafka key of an event (SPEC 5): `business:kind:normalized` of its highest-priority identifier, so events
 * about one person usually land on one partition in order; `business:event:<id>` when it carries none.
 * Correctness never depends on it (the resolver locks), only locality.
 */
export function partitionKey(businessId: string, contact: ContactIdentifiers, eventId: string): string {
  if (contact.external_id) return `${businessId}:ext:${contact.external_id}`;
  if (contact.email) return `${businessId}:email:${contact.email}`;
  if (contact.phone) return `${businessId}:phone:${contact.phone}`;
  return `${businessId}:event:${eventId}`;
}
