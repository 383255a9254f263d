import type { PropertyFilter } from "@crm/automations";
import type { SegmentDefinition } from "@crm/segment-definitions";

/** The contact as a filter sees it: the columns of contact.updated.v1's `contact` (traits included). */
export interface ContactSnapshot {
  external_id?: string | null;
  email?: string | null;
  phone?: string | null;
  name?: string | null;
  first_seen_at?: string | null;
  last_seen_at?: string | null;
  traits?: Record<string, unknown> | null;
}

const DAY_MS = 86_400_000;

/** The value of a contact field: a column, or `traits.<key>`. */
export function fieldValue(contact: ContactSnapshot, field: string): unknown {
  if (field.startsWith("traits.")) return contact.traits?.[field.slice("traits.".length)];
  return (contact as Record<string, unknown>)[field];
}

const equal = (a: unknown, b: unknown): boolean =>
  typeof a === "number" && typeof b === "number"
    ? a === b
    : a === b || (isScalar(a) && isScalar(b) && a === b);
const isScalar = (v: unknown) => typeof v === "string" || typeof v === "number" || typeof v === "boolean";

/**
 * One test of the segment rule language (contact condition or property filter) on a value. A missing value
 * passes only `exists`-free negative tests never: like SQL, an absent field compares as unknown (false), so
 * `!=` needs the field to exist. Numbers compare as numbers, strings as strings; a mix is false.
 */
export function passes(value: unknown, op: string, expected: unknown, now = Date.now()): boolean {
  if (op === "exists") return value !== undefined && value !== null;
  if (value === undefined || value === null) return false;
  switch (op) {
    case "=":
      return equal(value, expected);
    case "!=":
      return !equal(value, expected);
    case "<":
    case "<=":
    case ">":
    case ">=": {
      if (
        !(
          (typeof value === "number" && typeof expected === "number") ||
          (typeof value === "string" && typeof expected === "string")
        )
      ) {
        return false;
      }
      const a = value as number | string;
      const b = expected as number | string;
      return op === "<" ? a < b : op === "<=" ? a <= b : op === ">" ? a > b : a >= b;
    }
    case "contains":
      return typeof value === "string" && typeof expected === "string" && value.includes(expected);
    case "starts_with":
      return typeof value === "string" && typeof expected === "string" && value.startsWith(expected);
    case "in":
      return Array.isArray(expected) && expected.some((item) => equal(value, item));
    case "before":
    case "after": {
      const at = typeof value === "string" ? Date.parse(value) : Number.NaN;
      const limit = typeof expected === "string" ? Date.parse(expected) : Number.NaN;
      if (Number.isNaN(at) || Number.isNaN(limit)) return false;
      return op === "before" ? at < limit : at > limit;
    }
    case "within_last_days": {
      const at = typeof value === "string" ? Date.parse(value) : Number.NaN;
      return !Number.isNaN(at) && typeof expected === "number" && at >= now - expected * DAY_MS;
    }
    default:
      return false;
  }
}

/** A trigger's contact filter (all/any/not of contact conditions, checked when it was stored), walked iteratively. */
export function contactPasses(
  filter: SegmentDefinition | null | undefined,
  contact: ContactSnapshot,
): boolean {
  if (!filter) return true;
  const evaluate = (node: SegmentDefinition): boolean => {
    const [kind, body] = Object.entries(node)[0] as [string, unknown];
    switch (kind) {
      case "all":
        return (body as SegmentDefinition[]).every(evaluate);
      case "any":
        return (body as SegmentDefinition[]).some(evaluate);
      case "not":
        return !evaluate(body as SegmentDefinition);
      case "contact": {
        const test = body as { field: string; op: string; value?: unknown };
        return passes(fieldValue(contact, test.field), test.op, test.value);
      }
      default:
        return false;
    }
  };
  // Depth is bounded by the validator (10 levels), so recursion here is safe.
  return evaluate(filter);
}

/** An event passes a trigger's `where` when every filter passes on the top-level property it names. */
export function propsPass(where: PropertyFilter[] | undefined, props: Record<string, unknown>): boolean {
  return (where ?? []).every((f) =>
    passes(Object.hasOwn(props, f.property) ? props[f.property] : undefined, f.op, f.value),
  );
}
