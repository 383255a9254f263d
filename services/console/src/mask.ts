/**
 * PII masking for everything the console shows (SPEC 9.6 for the screen): emails, phones and names are masked
 * unless a reveal (recorded) asked for one value. Masks keep enough to tell values apart at a glance (first
 * letter, domain's first letter and TLD, last two digits) and never the whole value.
 */

export type PiiKind = "email" | "phone" | "name";
export const PII_FIELDS: ReadonlySet<string> = new Set<PiiKind>(["email", "phone", "name"]);

export function maskEmail(value: string): string {
  const at = value.lastIndexOf("@");
  if (at < 1) return "•••";
  const local = [...value.slice(0, at)];
  const domain = value.slice(at + 1);
  const dot = domain.lastIndexOf(".");
  const tld = dot > 0 ? domain.slice(dot) : "";
  return `${local[0]}•••@${[...domain][0] ?? ""}•••${tld.slice(0, 8)}`;
}

export function maskPhone(value: string): string {
  const digits = value.replace(/\D/g, "");
  return digits.length < 4 ? "•••" : `${value.startsWith("+") ? "+" : ""}•••••${digits.slice(-2)}`;
}

export function maskName(value: string): string {
  const first = [...value.trim()][0];
  return first ? `${first}•••` : "•••";
}

export function maskValue(kind: string, value: string): string {
  if (kind === "email") return maskEmail(value);
  if (kind === "phone") return maskPhone(value);
  if (kind === "name") return maskName(value);
  return value;
}

/**
 * A decoded message value with every PII field masked, at any depth: `email`, `phone`, `name` keys, and
 * identity pairs `{type: "email", value}`.
 */
export function maskDeep(value: unknown, depth = 0): unknown {
  if (depth > 64) return "…";
  if (Array.isArray(value)) return value.map((item) => maskDeep(item, depth + 1));
  if (value === null || typeof value !== "object" || value instanceof Date) return value;
  const record = value as Record<string, unknown>;
  const identityKind =
    typeof record.type === "string" && PII_FIELDS.has(record.type) && typeof record.value === "string"
      ? record.type
      : undefined;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(record)) {
    if (typeof field === "string" && PII_FIELDS.has(key)) out[key] = maskValue(key, field);
    else if (identityKind && key === "value" && typeof field === "string")
      out[key] = maskValue(identityKind, field);
    else out[key] = maskDeep(field, depth + 1);
  }
  return out;
}

/** events.raw.v1 keys are `business:kind:normalized`: the identifier part is masked for email and phone. */
export function maskKey(key: string | undefined): string | undefined {
  if (!key) return key;
  const [business, kind, ...rest] = key.split(":");
  if (!kind || rest.length === 0) return key;
  return PII_FIELDS.has(kind) ? `${business}:${kind}:${maskValue(kind, rest.join(":"))}` : key;
}
