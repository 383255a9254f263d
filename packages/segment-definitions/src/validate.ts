import { newAjv } from "@crm/schema-registry";
import { DOCUMENT_SCHEMAS, type SegmentDefinitionV1 } from "@crm/schemas";
import { jsonIssues, type StorableIssue, textProblem, timestampProblem } from "@crm/storable";
import type { ErrorObject } from "ajv";

/** The rule of a segment: schemas/segment-definition.v1.json. */
export type SegmentDefinition = SegmentDefinitionV1;
export type Condition = SegmentDefinitionV1;
export type DefinitionIssue = StorableIssue;

/** Bytes of a definition as JSON: a rule is written by a person, and every evaluation walks it. */
export const MAX_DEFINITION_BYTES = 16 * 1024;
/** all/any/not nested in one another, the root being level 1. */
export const MAX_CONDITION_DEPTH = 10;
/** Conditions in one definition, combinators included. */
export const MAX_CONDITIONS = 200;
/** Distinct other segments one definition may name. */
export const MAX_SEGMENT_REFERENCES = 20;
/** Length of a segment's name. */
export const MAX_NAME_LENGTH = 200;

// JSON containers per condition level (the condition object and an all/any array) plus a leaf's own (contact ->
// value array): what the iterative storable walk allows before ajv's recursive validator ever sees the value.
const MAX_JSON_DEPTH = 2 * MAX_CONDITION_DEPTH + 3;
const DATE_FIELDS = new Set(["first_seen_at", "last_seen_at"]);
const DATE_OPS = new Set(["before", "after", "within_last_days"]);
// Latest accepted before/after date: a rule about the year 10000 is a typo, and timestamptz stops at 294276.
const LATEST_DATE_MS = Date.UTC(9999, 11, 31);

const validateSchema = newAjv().compile(DOCUMENT_SCHEMAS["segment-definition.v1"]);

export type DefinitionCheck =
  | { ok: true; definition: SegmentDefinition; references: string[] }
  | { ok: false; issues: DefinitionIssue[] };

const jsonPath = (pointer: string): string[] =>
  pointer === ""
    ? []
    : pointer
        .slice(1)
        .split("/")
        .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"));

// ajv reports every failed branch of if/then and anyOf; the leaf errors say what is wrong, the "must match
// then schema" wrappers only repeat them.
const WRAPPERS = new Set(["if", "anyOf", "oneOf", "allOf"]);
function schemaIssues(errors: ErrorObject[], prefix: string[]): DefinitionIssue[] {
  const leaves = errors.filter((e) => !WRAPPERS.has(e.keyword));
  const seen = new Set<string>();
  const issues: DefinitionIssue[] = [];
  for (const e of leaves.length > 0 ? leaves : errors) {
    const extra =
      e.keyword === "additionalProperties"
        ? ` (${String((e.params as { additionalProperty: string }).additionalProperty)})`
        : e.keyword === "enum"
          ? `: ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`
          : "";
    const issue = {
      path: [...prefix, ...jsonPath(e.instancePath)],
      message: `${e.message ?? "is invalid"}${extra}`,
    };
    const key = `${issue.path.join("\u0000")}|${issue.message}`;
    if (!seen.has(key)) issues.push(issue);
    seen.add(key);
  }
  return issues.slice(0, 20);
}

interface Pending {
  node: Record<string, unknown>;
  path: string[];
  depth: number;
}

/**
 * Every problem of a definition that can be seen without the database: storable JSON (no NUL, no lone surrogate,
 * finite numbers, bounded nesting, walked iteratively first so no input can overflow a stack), the JSON Schema,
 * size, depth and number of conditions, windows that end before they start, dates Postgres can hold, date
 * operators on text fields. On success, the ids of the segments it names (each once).
 */
export function checkDefinition(value: unknown, prefix: string[] = []): DefinitionCheck {
  const storable = jsonIssues(value, { path: prefix, maxDepth: MAX_JSON_DEPTH });
  if (storable.length > 0) return { ok: false, issues: storable };
  const bytes = Buffer.byteLength(JSON.stringify(value) ?? "", "utf8");
  if (bytes > MAX_DEFINITION_BYTES) {
    return {
      ok: false,
      issues: [{ path: prefix, message: `is ${bytes} bytes; at most ${MAX_DEFINITION_BYTES}` }],
    };
  }
  if (!validateSchema(value)) return { ok: false, issues: schemaIssues(validateSchema.errors ?? [], prefix) };

  const issues: DefinitionIssue[] = [];
  const references = new Set<string>();
  let conditions = 0;
  const stack: Pending[] = [{ node: value as Record<string, unknown>, path: prefix, depth: 1 }];
  while (stack.length > 0) {
    const { node, path, depth } = stack.pop()!;
    conditions += 1;
    if (depth > MAX_CONDITION_DEPTH) {
      issues.push({ path, message: `conditions nested deeper than ${MAX_CONDITION_DEPTH} levels` });
      continue;
    }
    const [kind, body] = Object.entries(node)[0] as [keyof Condition, unknown];
    switch (kind) {
      case "all":
      case "any":
        (body as Record<string, unknown>[]).forEach((child, i) => {
          stack.push({ node: child, path: [...path, kind, String(i)], depth: depth + 1 });
        });
        break;
      case "not":
        stack.push({ node: body as Record<string, unknown>, path: [...path, "not"], depth: depth + 1 });
        break;
      case "segment":
        references.add((body as string).toLowerCase());
        break;
      case "contact":
        issues.push(...contactIssues(body as ContactTest, [...path, "contact"]));
        break;
      case "event": {
        const window = (body as { window: { from_days_ago?: number; to_days_ago?: number } }).window;
        if (window.from_days_ago !== undefined && window.from_days_ago <= window.to_days_ago!) {
          issues.push({
            path: [...path, "event", "window"],
            message: "from_days_ago must be greater than to_days_ago (the window runs from the older day)",
          });
        }
        break;
      }
    }
  }
  if (conditions > MAX_CONDITIONS) {
    issues.push({ path: prefix, message: `has ${conditions} conditions; at most ${MAX_CONDITIONS}` });
  }
  if (references.size > MAX_SEGMENT_REFERENCES) {
    issues.push({
      path: prefix,
      message: `names ${references.size} segments; at most ${MAX_SEGMENT_REFERENCES}`,
    });
  }
  if (issues.length > 0) return { ok: false, issues: issues.slice(0, 20) };
  return { ok: true, definition: value as SegmentDefinition, references: [...references] };
}

interface ContactTest {
  field: string;
  op: string;
  value?: unknown;
}

function contactIssues(test: ContactTest, path: string[]): DefinitionIssue[] {
  const issues: DefinitionIssue[] = [];
  const isTrait = test.field.startsWith("traits.");
  if (isTrait) {
    const problem = textProblem(test.field);
    if (problem || test.field.length === "traits.".length) {
      issues.push({ path: [...path, "field"], message: `trait key ${problem ?? "is empty"}` });
    }
  }
  if (DATE_OPS.has(test.op) && !isTrait && !DATE_FIELDS.has(test.field)) {
    issues.push({
      path: [...path, "op"],
      message: `${test.op} applies to first_seen_at, last_seen_at or a trait, not to ${test.field}`,
    });
  }
  if (DATE_FIELDS.has(test.field) && !DATE_OPS.has(test.op) && test.op !== "exists") {
    issues.push({
      path: [...path, "op"],
      message: `${test.field} is a time: use before, after, within_last_days or exists`,
    });
  }
  if ((test.op === "before" || test.op === "after") && typeof test.value === "string") {
    const problem =
      timestampProblem(test.value, undefined) ??
      (Date.parse(test.value) > LATEST_DATE_MS ? "is after 9999-12-31" : undefined);
    if (problem) issues.push({ path: [...path, "value"], message: `date ${problem}` });
  }
  return issues;
}

/** A segment's name: 1..200 characters after trim, storable, no control characters. */
export function nameProblem(name: unknown): string | undefined {
  if (typeof name !== "string") return "must be a string";
  const trimmed = name.trim();
  if (trimmed.length === 0 || trimmed.length > MAX_NAME_LENGTH)
    return `must be 1..${MAX_NAME_LENGTH} characters`;
  return textProblem(trimmed);
}
