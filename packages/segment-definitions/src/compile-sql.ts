import { segmentReferences } from "./store.ts";
import { checkDefinition, type SegmentDefinition } from "./validate.ts";

/**
 * The one evaluator of the rule language (issue 16): a definition compiled into ONE SQL predicate over a contact
 * (its crm_contacts row and its crm_events) at a given `now`. Backfill, incremental re-evaluation, the sweep and
 * the tests' from-scratch oracle all run the query built here, so "incremental == from scratch" holds by
 * construction: there is no second implementation to drift. Every value of a rule (event types, property keys,
 * trait keys, strings, numbers, dates, day counts) is a bound parameter; only fixed SQL text and column names from
 * a closed list are written into the statement, because the rule language is hostile input.
 *
 * Besides the result, each (contact, segment) gets `next_check`: the earliest time after `now` at which the result
 * could change with no new event or contact change (an event leaving or entering a window, a date test crossing
 * its N days). It is an over-approximation (a time the result may not actually flip at), never later than a flip.
 */

/** A stored, active definition of a segment (`segment_definitions` row). */
export interface StoredSegment {
  id: string;
  version: number;
  definition: SegmentDefinition;
}

/** Which contacts of the business the query evaluates. */
export type EvaluationScope =
  | { kind: "contacts"; contactIds: readonly string[] }
  /** Contacts with an id after `after` (null: from the first), in id order, at most `limit` (backfill pages). */
  | { kind: "page"; after: string | null; limit: number }
  | { kind: "all" };

export interface EvaluationQuery {
  text: string;
  values: unknown[];
}

/** One row of an evaluation: whether `contact_id` is in `segment_id` at `now`, and when to look again. */
export interface EvaluationRow {
  contact_id: string;
  segment_id: string;
  matched: boolean;
  next_check: Date | null;
}

/** A definition that cannot be compiled (invalid, a missing or cyclic reference): never an SQL error later. */
export class CompileError extends Error {}

const COLUMNS: Record<string, string> = {
  external_id: "c.external_id",
  email: "c.email",
  phone: "c.phone",
  name: "c.name",
};
const TIME_COLUMNS: Record<string, string> = {
  first_seen_at: "c.first_seen_at",
  last_seen_at: "c.last_seen_at",
};
const COMPARISONS = new Set(["=", "!=", "<", "<=", ">", ">="]);
const ORDERINGS = new Set(["<", "<=", ">", ">="]);

class Params {
  readonly values: unknown[] = [];
  /** A placeholder for `value` with an explicit type, so Postgres never guesses one from the text. */
  add(value: unknown, type: "text" | "numeric" | "jsonb" | "timestamptz" | "int" | "uuid" | "uuid[]") {
    this.values.push(value);
    return `$${this.values.length}::${type}`;
  }
}

interface Compiled {
  /** A boolean SQL expression, never NULL. */
  expr: string;
  /** Timestamptz expressions (may be NULL) whose least is when the result may change without new data. */
  next: string[];
}

interface Builder {
  params: Params;
  now: string;
  /** Event aggregates, each one app.segment_atom (v, n): columns of ONE aggregate over the contact's events. */
  atoms: string[];
  /** The event-type placeholders and the oldest times the atoms read: the bounds of that one scan. */
  eventTypes: string[];
  oldest: string[];
  /** Where each compiled segment's result is: its result and next-check columns, and its level. */
  segmentAt: Map<string, { m: string; n: string; level: number }>;
  /** The level of the segment being compiled: 1 + the highest level of the segments it names. */
  level: number;
}

const days = (b: Builder, n: number) => `make_interval(secs => ${b.params.add(n, "int")} * 86400)`;

function numberParam(b: Builder, value: number): string {
  return b.params.add(String(value), "numeric");
}

/** A test of a JSON value (a contact field as jsonb, a trait, an event property); false when it is absent. */
function jsonTest(b: Builder, f: string, op: string, value: unknown): string {
  const kindIs = (kind: string, then: string) =>
    `(CASE WHEN jsonb_typeof(${f}) = '${kind}' THEN ${then} ELSE false END)`;
  switch (op) {
    case "=":
      return `coalesce(${f} = ${b.params.add(JSON.stringify(value), "jsonb")}, false)`;
    case "!=":
      return `(NOT coalesce(${f} = ${b.params.add(JSON.stringify(value), "jsonb")}, false))`;
    case "<":
    case "<=":
    case ">":
    case ">=":
      if (!ORDERINGS.has(op)) break;
      if (typeof value === "number")
        return kindIs("number", `(${f} #>> '{}')::numeric ${op} ${numberParam(b, value)}`);
      if (typeof value === "string") {
        return kindIs(
          "string",
          `(${f} #>> '{}') COLLATE "C" ${op} ${b.params.add(value, "text")} COLLATE "C"`,
        );
      }
      break;
    case "contains":
      if (typeof value === "string")
        return kindIs("string", `strpos(${f} #>> '{}', ${b.params.add(value, "text")}) > 0`);
      break;
    case "starts_with":
      if (typeof value === "string")
        return kindIs("string", `starts_with(${f} #>> '{}', ${b.params.add(value, "text")})`);
      break;
    case "in":
      if (Array.isArray(value)) {
        return `(CASE WHEN jsonb_typeof(${f}) IN ('string', 'number', 'boolean') THEN ${b.params.add(JSON.stringify(value), "jsonb")} @> jsonb_build_array(${f}) ELSE false END)`;
      }
      break;
    case "exists":
      return `coalesce(jsonb_typeof(${f}) <> 'null', false)`;
  }
  throw new CompileError(`operator ${op} does not take ${JSON.stringify(value)}`);
}

/** A test of a time (a time column, or a trait read by app.segment_time). */
function timeTest(b: Builder, t: string, op: string, value: unknown): Compiled {
  switch (op) {
    case "before":
    case "after": {
      const at = new Date(String(value));
      if (Number.isNaN(at.getTime())) throw new CompileError(`not a date-time: ${String(value)}`);
      const param = b.params.add(at.toISOString(), "timestamptz");
      return { expr: `coalesce(${t} ${op === "before" ? "<" : ">"} ${param}, false)`, next: [] };
    }
    case "within_last_days": {
      const span = days(b, Number(value));
      return {
        expr: `coalesce(${t} > ${b.now} - ${span} AND ${t} <= ${b.now}, false)`,
        next: [
          `(CASE WHEN ${t} > ${b.now} THEN ${t} WHEN ${t} + ${span} > ${b.now} THEN ${t} + ${span} END)`,
        ],
      };
    }
    case "exists":
      return { expr: `(${t} IS NOT NULL)`, next: [] };
  }
  throw new CompileError(`operator ${op} does not apply to a time`);
}

function contactCondition(b: Builder, test: { field: string; op: string; value?: unknown }): Compiled {
  const { field, op, value } = test;
  const dateOp = op === "before" || op === "after" || op === "within_last_days";
  if (field.startsWith("traits.")) {
    const trait = `(c.traits -> ${b.params.add(field.slice("traits.".length), "text")})`;
    return dateOp
      ? timeTest(b, `app.segment_time(${trait})`, op, value)
      : { expr: jsonTest(b, trait, op, value), next: [] };
  }
  const timeColumn = TIME_COLUMNS[field];
  if (timeColumn) return timeTest(b, timeColumn, op, value);
  const column = COLUMNS[field];
  if (!column || dateOp) throw new CompileError(`no field ${field} for ${op}`);
  return { expr: jsonTest(b, `to_jsonb(${column})`, op, value), next: [] };
}

interface EventTest {
  type: string;
  where?: Array<{ property: string; op: string; value?: unknown }>;
  window?: { last_days?: number; from_days_ago?: number; to_days_ago?: number };
  measure?: string;
  property?: string;
  op?: string;
  value?: number;
  last_days?: number;
}

/**
 * An aggregate over the contact's events of one type in a window: `v` the test's result, `n` the next time an event
 * enters (occurred_at + to_days_ago) or leaves (occurred_at + from_days_ago) the window in a way that can flip `v`
 * (NULL: time alone cannot; the contact needs no row while it is not a member). Every atom of a statement
 * is a column of one aggregate over one index scan of the contact's events, each FILTERed on its own events (one
 * scan per contact instead of one per atom: the index is on contact_id alone, so each scan read every event).
 */
function eventCondition(b: Builder, test: EventTest, none: boolean): Compiled {
  const from = none ? test.last_days! : (test.window!.last_days ?? test.window!.from_days_ago!);
  const to = none ? 0 : (test.window!.to_days_ago ?? 0);
  if (!(Number.isInteger(from) && Number.isInteger(to) && from > to && to >= 0)) {
    throw new CompileError("a window runs from an older day to a newer one");
  }
  const fromSpan = days(b, from);
  const toSpan = to === 0 ? undefined : days(b, to);
  const upper = toSpan ? `${b.now} - ${toSpan}` : b.now;
  const enters = toSpan ? `e.occurred_at + ${toSpan}` : "e.occurred_at";
  const filters = (test.where ?? []).map((w) =>
    jsonTest(b, `(e.props -> ${b.params.add(w.property, "text")})`, w.op, w.value),
  );
  // The events this atom reads: every aggregate of it is FILTERed on this (one scan of the contact's events
  // serves every atom; each test above is guarded by its JSON type, so it is safe on any event's props).
  const type = b.params.add(test.type, "text");
  const mine = [`e.type = ${type}`, `e.occurred_at > ${b.now} - ${fromSpan}`, ...filters].join(" AND ");
  b.eventTypes.push(type);
  b.oldest.push(`${b.now} - ${fromSpan}`);
  const inWindow = `${mine} AND e.occurred_at <= ${upper}`;
  // The measure grows when an event enters the window and shrinks when one leaves it (counts, and sums of values
  // that are all >= 0); `grows` is the SQL condition under which that holds, `rises` says whether the test is
  // true for large measures (>, >=) or small ones (<, <=, and "no event": count = 0). Then time alone can flip a
  // true result only one way and a false one only the other: only those events' times are next checks. Without
  // it (=, !=, min, max, avg, sums with negative values) both enter and leave times are.
  let v: string;
  let grows = "false";
  let rises = false;
  if (none) {
    v = `count(*) FILTER (WHERE ${inWindow}) = 0`;
    grows = "true";
  } else {
    const op = test.op!;
    if (!COMPARISONS.has(op) || typeof test.value !== "number") throw new CompileError("bad comparison");
    const k = numberParam(b, test.value);
    rises = op === ">" || op === ">=";
    const ordered = ORDERINGS.has(op);
    if (test.measure === "count") {
      v = `count(*) FILTER (WHERE ${inWindow}) ${op} ${k}`;
      if (ordered) grows = "true";
    } else {
      const key = b.params.add(test.property, "text");
      const value = `(CASE WHEN jsonb_typeof(e.props -> ${key}) = 'number' THEN (e.props ->> ${key})::numeric END)`;
      const fn = { sum: "sum", min: "min", max: "max", avg: "avg" }[test.measure ?? ""];
      if (!fn) throw new CompileError(`no measure ${test.measure}`);
      // A sum over no events is 0; min, max and avg over no number have no value, and a test of no value is false.
      v =
        fn === "sum"
          ? `coalesce(sum(${value}) FILTER (WHERE ${inWindow}), 0) ${op} ${k}`
          : `coalesce(${fn}(${value}) FILTER (WHERE ${inWindow}) ${op} ${k}, false)`;
      if (fn === "sum" && ordered) grows = `coalesce(bool_and(${value} >= 0) FILTER (WHERE ${mine}), true)`;
    }
  }
  // Entering can flip the result when it is false for a test of large measures, or true for one of small ones;
  // leaving, the other way round.
  const entering = `(NOT (${grows}) OR (${v}) = ${rises ? "false" : "true"})`;
  const leaving = `(NOT (${grows}) OR (${v}) = ${rises ? "true" : "false"})`;
  const alias = `a${b.atoms.length}`;
  b.atoms.push(
    `ROW(${v},
       least(CASE WHEN ${entering} THEN min(${enters}) FILTER (WHERE ${mine} AND ${enters} > ${b.now}) END,
             CASE WHEN ${leaving} THEN min(e.occurred_at + ${fromSpan}) FILTER (WHERE ${mine}) END)
     )::app.segment_atom AS ${alias}`,
  );
  return { expr: `(atoms.${alias}).v`, next: [`(atoms.${alias}).n`] };
}

function condition(b: Builder, node: SegmentDefinition): Compiled {
  const [kind, body] = Object.entries(node)[0] as [string, unknown];
  switch (kind) {
    case "all":
    case "any": {
      const parts = (body as SegmentDefinition[]).map((child) => condition(b, child));
      return {
        expr: `(${parts.map((p) => p.expr).join(kind === "all" ? " AND " : " OR ")})`,
        next: parts.flatMap((p) => p.next),
      };
    }
    case "not": {
      const inner = condition(b, body as SegmentDefinition);
      return { expr: `(NOT ${inner.expr})`, next: inner.next };
    }
    case "contact":
      return contactCondition(b, body as { field: string; op: string; value?: unknown });
    case "event":
      return eventCondition(b, body as EventTest, false);
    case "no_event":
      return eventCondition(b, body as EventTest, true);
    case "segment": {
      const at = b.segmentAt.get((body as string).toLowerCase());
      if (!at) throw new CompileError(`segment ${String(body)} is not compiled before its user`);
      b.level = Math.max(b.level, at.level + 1);
      return { expr: at.m, next: [at.n] };
    }
  }
  throw new CompileError(`no condition kind ${kind}`);
}

/**
 * The segments `targets` need, each after every segment it names (dependencies first). Throws on a reference to a
 * segment that is not in `segments` (archived, another business's, missing) and on a cycle.
 */
export function evaluationOrder(
  segments: ReadonlyMap<string, StoredSegment>,
  targets: readonly string[],
): string[] {
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  for (const target of targets) {
    const stack: Array<{ id: string; refs: string[]; i: number }> = [];
    const enter = (id: string) => {
      const segment = segments.get(id);
      if (!segment) throw new CompileError(`segment ${id} is not an active segment of this business`);
      state.set(id, "visiting");
      stack.push({ id, refs: segmentReferences(segment.definition), i: 0 });
    };
    if (state.get(target) === "done") continue;
    enter(target.toLowerCase());
    while (stack.length > 0) {
      const top = stack.at(-1)!;
      const next = top.refs[top.i++];
      if (next === undefined) {
        stack.pop();
        state.set(top.id, "done");
        order.push(top.id);
      } else if (state.get(next) === "visiting") {
        throw new CompileError(`segment references form a cycle through ${next}`);
      } else if (state.get(next) !== "done") enter(next);
    }
  }
  return order;
}

/**
 * The query evaluating `targets` (segment ids of `segments`, the business's active definitions by lower-case id)
 * for the contacts of `scope`, at `now`. Rows: contact_id, segment_id, matched, next_check (EvaluationRow).
 * A merged-away contact (merged_into set) matches nothing. Parameter $1 is the business: every row read is that
 * business's (and RLS says the same).
 */
export function evaluationQuery(input: {
  businessId: string;
  segments: ReadonlyMap<string, StoredSegment>;
  targets: readonly string[];
  scope: EvaluationScope;
  now: Date;
}): EvaluationQuery {
  if (input.targets.length === 0) throw new CompileError("nothing to evaluate");
  const params = new Params();
  params.add(input.businessId, "uuid");
  const b: Builder = {
    params,
    now: params.add(input.now.toISOString(), "timestamptz"),
    atoms: [],
    eventTypes: [],
    oldest: [],
    segmentAt: new Map(),
    level: 1,
  };
  // Segments by level (a segment after the ones it names): one LATERAL per level, so the statement has a handful
  // of FROM items whatever the number of segments and conditions (planning time grows fast with FROM items).
  const levels: string[][] = [];
  for (const id of evaluationOrder(input.segments, input.targets)) {
    const segment = input.segments.get(id)!;
    const checked = checkDefinition(segment.definition);
    if (!checked.ok)
      throw new CompileError(`segment ${id}: ${checked.issues.map((i) => i.message).join("; ")}`);
    b.level = 1;
    const compiled = condition(b, segment.definition);
    const next = compiled.next.length === 0 ? "NULL::timestamptz" : `least(${compiled.next.join(", ")})`;
    const k = b.segmentAt.size;
    const level = levels[b.level - 1] ?? [];
    level.push(`${compiled.expr} AS m${k}, ${next} AS n${k}`);
    levels[b.level - 1] = level;
    b.segmentAt.set(id, { m: `l${b.level}.m${k}`, n: `l${b.level}.n${k}`, level: b.level });
  }
  // OFFSET 0 keeps each subquery a fence: its columns are computed once per contact, not copied into every use.
  const joins = [
    ...(b.atoms.length > 0
      ? [
          `CROSS JOIN LATERAL (SELECT ${b.atoms.join(",\n  ")}
           FROM crm_events e
           WHERE e.contact_id = c.id AND e.business_id = $1::uuid AND e.type IN (${b.eventTypes.join(", ")})
             AND e.occurred_at > least(${b.oldest.join(", ")}) OFFSET 0) atoms`,
        ]
      : []),
    ...levels.map((columns, i) => `CROSS JOIN LATERAL (SELECT ${columns.join(",\n  ")} OFFSET 0) l${i + 1}`),
  ];
  const rows = input.targets.map((target) => {
    const at = b.segmentAt.get(target.toLowerCase())!;
    return `(${params.add(target.toLowerCase(), "text")}, c.merged_into IS NULL AND ${at.m},
      CASE WHEN c.merged_into IS NULL THEN ${at.n} END)`;
  });
  // The contacts: a FROM item and a condition on `c`.
  let table = "crm_contacts c";
  // $2 (now) is named even by a rule that does not read the clock, so Postgres always knows its type.
  let where = "c.business_id = $1::uuid AND $2::timestamptz IS NOT NULL";
  const scope = input.scope;
  if (scope.kind === "contacts") {
    where += ` AND c.id = ANY(${params.add(scope.contactIds, "uuid[]")})`;
  } else if (scope.kind === "page") {
    const after = params.add(scope.after, "uuid");
    table = `(SELECT * FROM crm_contacts WHERE business_id = $1::uuid AND (${after} IS NULL OR id > ${after})
             ORDER BY id LIMIT ${params.add(scope.limit, "int")}) c`;
  }
  const text = `SELECT c.id::text AS contact_id, t.segment_id, t.matched, t.next_check
FROM ${table}
${joins.join("\n")}
CROSS JOIN LATERAL (VALUES ${rows.join(", ")}) t(segment_id, matched, next_check)
WHERE ${where}`;
  return { text, values: params.values };
}

/** What can change a segment's result (itself and the segments it names): these event types, and contact data. */
export interface SegmentInputs {
  eventTypes: Set<string>;
  /** Contact fields it tests other than the activity times (`email`, `name`, `traits.plan`, ...): a change of one
   * is named in contact.updated.v1's changed_fields. */
  fields: Set<string>;
  /** It tests first_seen_at or last_seen_at, which every applied event may move (no contact.updated.v1 row). */
  activity: boolean;
}

/** The inputs of `target` and every segment it names, transitively. */
export function segmentInputs(segments: ReadonlyMap<string, StoredSegment>, target: string): SegmentInputs {
  const inputs: SegmentInputs = { eventTypes: new Set(), fields: new Set(), activity: false };
  for (const id of evaluationOrder(segments, [target])) {
    const stack: unknown[] = [segments.get(id)!.definition];
    while (stack.length > 0) {
      const node = stack.pop() as Record<string, unknown>;
      const [kind, body] = Object.entries(node)[0] as [string, unknown];
      if (kind === "all" || kind === "any") stack.push(...(body as unknown[]));
      else if (kind === "not") stack.push(body);
      else if (kind === "contact") {
        const field = (body as { field: string }).field;
        if (field in TIME_COLUMNS) inputs.activity = true;
        else inputs.fields.add(field);
      } else if (kind === "event" || kind === "no_event")
        inputs.eventTypes.add((body as { type: string }).type);
    }
  }
  return inputs;
}
