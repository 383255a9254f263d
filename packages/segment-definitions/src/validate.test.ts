import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { checkDefinition, MAX_CONDITION_DEPTH, MAX_DEFINITION_BYTES, nameProblem } from "./validate.ts";

const highValue = {
  event: {
    type: "purchase",
    window: { last_days: 30 },
    measure: "sum",
    property: "amount",
    op: ">",
    value: 500,
  },
};
const atRisk = {
  all: [
    { no_event: { type: "login", last_days: 14 } },
    { event: { type: "purchase", window: { last_days: 3650 }, measure: "count", op: ">=", value: 1 } },
  ],
};

/** Valid definitions, from a generator that covers every kind of condition and operator. */
const scalar = fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean());
const field = fc.constantFrom("external_id", "email", "phone", "name", "traits.plan", "traits.ltv");
const valueTest = fc.oneof(
  fc.record({ op: fc.constantFrom("=", "!="), value: scalar }),
  fc.record({
    op: fc.constantFrom("<", "<=", ">", ">="),
    value: fc.oneof(fc.integer(), fc.string({ maxLength: 9 })),
  }),
  fc.record({
    op: fc.constantFrom("contains", "starts_with"),
    value: fc.string({ minLength: 1, maxLength: 9 }),
  }),
  fc.record({ op: fc.constant("in"), value: fc.array(scalar, { minLength: 1, maxLength: 5 }) }),
  fc.record({ op: fc.constant("exists") }),
);
const dateTest = fc.oneof(
  fc.record({
    op: fc.constantFrom("before", "after"),
    value: fc
      .date({ min: new Date("1950-01-01"), max: new Date("2200-01-01"), noInvalidDate: true })
      .map((d) => d.toISOString()),
  }),
  fc.record({ op: fc.constant("within_last_days"), value: fc.integer({ min: 1, max: 3650 }) }),
);
const storableText = fc
  .string({ minLength: 1, maxLength: 20 })
  .filter((s) => !/\p{Cc}/u.test(s) && s.isWellFormed());
const contact = fc.oneof(
  fc.tuple(field, valueTest).map(([f, t]) => ({ contact: { field: f, ...t } })),
  fc.tuple(fc.constantFrom("first_seen_at", "last_seen_at", "traits.renewal"), dateTest).map(([f, t]) => ({
    contact: { field: f, ...t },
  })),
);
const where = fc.array(
  fc.tuple(storableText, valueTest).map(([property, t]) => ({ property, ...t })),
  { maxLength: 3 },
);
const window = fc.oneof(
  fc.integer({ min: 1, max: 3650 }).map((n) => ({ last_days: n })),
  fc
    .tuple(fc.integer({ min: 1, max: 3650 }), fc.integer({ min: 0, max: 3649 }))
    .filter(([from, to]) => from > to)
    .map(([from, to]) => ({ from_days_ago: from, to_days_ago: to })),
);
const event = fc
  .oneof(
    fc.record({
      type: storableText,
      where,
      window,
      measure: fc.constant("count"),
      op: fc.constantFrom("=", ">="),
      value: fc.nat(100),
    }),
    fc.record({
      type: storableText,
      window,
      measure: fc.constantFrom("sum", "min", "max", "avg"),
      property: storableText,
      op: fc.constantFrom("<", ">"),
      value: fc.double({ noNaN: true, noDefaultInfinity: true }),
    }),
  )
  .map((e) => ({ event: e }));
const noEvent = fc
  .record({ type: storableText, last_days: fc.integer({ min: 1, max: 3650 }) })
  .map((e) => ({ no_event: e }));
const leaf = fc.oneof(
  contact,
  event,
  noEvent,
  fc.uuid().map((id) => ({ segment: id })),
);
const { condition } = fc.letrec((tie) => ({
  condition: fc.oneof(
    { depthSize: "small", maxDepth: 4 },
    leaf,
    fc.array(tie("condition"), { minLength: 1, maxLength: 3 }).map((all) => ({ all })),
    fc.array(tie("condition"), { minLength: 1, maxLength: 3 }).map((any) => ({ any })),
    tie("condition").map((not) => ({ not })),
  ),
}));

describe("checkDefinition", () => {
  it("accepts the README's examples", () => {
    expect(checkDefinition(highValue)).toMatchObject({ ok: true, references: [] });
    expect(checkDefinition(atRisk)).toMatchObject({ ok: true });
  });

  it("accepts every definition of the generator and finds the segments it names", () => {
    fc.assert(
      fc.property(condition, (definition) => {
        const checked = checkDefinition(definition);
        if (!checked.ok && checked.issues.some((i) => !/nested deeper|conditions;|bytes;/.test(i.message))) {
          throw new Error(JSON.stringify(checked.issues));
        }
        if (checked.ok) {
          const named = JSON.stringify(definition).match(/"segment":"[^"]+"/g) ?? [];
          expect(checked.references.length).toBe(new Set(named.map((s) => s.toLowerCase())).size);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("never throws on arbitrary JSON and Unicode; what it accepts is storable JSON", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue(),
          condition.map((c) => JSON.parse(JSON.stringify(c))),
        ),
        fc.string({ unit: "binary" }),
        (value, text) => {
          const checked = checkDefinition(value);
          if (checked.ok)
            expect(JSON.stringify(JSON.parse(JSON.stringify(value)))).toBe(JSON.stringify(value));
          const withText = checkDefinition({ contact: { field: `traits.${text}`, op: "=", value: text } });
          if (withText.ok) expect(/\p{Cc}/u.test(text) || !text.isWellFormed()).toBe(false);
          else expect(withText.issues.length).toBeGreaterThan(0);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("refuses the storable rules' violations: NUL, control characters, lone surrogates, __proto__", () => {
    for (const bad of ["a\u0000b", "a\u0007b", "\ud800", "x\u0085"]) {
      expect(checkDefinition({ contact: { field: "name", op: "=", value: bad } }).ok).toBe(false);
      expect(checkDefinition({ contact: { field: `traits.${bad}`, op: "exists" } }).ok).toBe(false);
      expect(checkDefinition({ no_event: { type: bad, last_days: 3 } }).ok).toBe(false);
      expect(nameProblem(bad)).toBeDefined();
    }
    expect(checkDefinition(JSON.parse('{"all":[{"__proto__":{}}]}')).ok).toBe(false);
  });

  it("bounds depth and size, iteratively (a 100,000-deep value is refused, not a stack overflow)", () => {
    let deep: unknown = { contact: { field: "name", op: "exists" } };
    for (let i = 0; i < MAX_CONDITION_DEPTH; i++) deep = { not: deep };
    expect(checkDefinition(deep)).toMatchObject({ ok: false });
    let veryDeep: unknown = {};
    for (let i = 0; i < 100_000; i++) veryDeep = { not: veryDeep };
    expect(checkDefinition(veryDeep)).toMatchObject({ ok: false });
    const wide = {
      any: Array.from({ length: 50 }, () => ({
        contact: { field: "name", op: "=", value: "x".repeat(400) },
      })),
    };
    expect(JSON.stringify(wide).length).toBeGreaterThan(MAX_DEFINITION_BYTES);
    expect(checkDefinition(wide)).toMatchObject({ ok: false });
  });

  it("says what is wrong, by path", () => {
    const check = (value: unknown) => {
      const checked = checkDefinition(value, ["definition"]);
      return checked.ok ? [] : checked.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    };
    expect(check({ contact: { field: "email", op: "before", value: "2026-01-01T00:00:00Z" } })).toEqual([
      "definition.contact.op: before applies to first_seen_at, last_seen_at or a trait, not to email",
    ]);
    expect(check({ contact: { field: "last_seen_at", op: "contains", value: "x" } })[0]).toMatch(/is a time/);
    expect(check({ contact: { field: "traits.x", op: "after", value: "0000-01-01T00:00:00Z" } })[0]).toMatch(
      /date/,
    );
    expect(check({ contact: { field: "password", op: "exists" } }).length).toBeGreaterThan(0);
    expect(check({ contact: { field: "name", op: "exists", value: 1 } }).length).toBeGreaterThan(0);
    expect(check({ event: { ...highValue.event, window: { from_days_ago: 7, to_days_ago: 7 } } })).toEqual([
      "definition.event.window: from_days_ago must be greater than to_days_ago (the window runs from the older day)",
    ]);
    expect(
      check({ event: { type: "x", window: { last_days: 1 }, measure: "sum", op: ">", value: 1 } }).length,
    ).toBeGreaterThan(0);
    expect(
      check({ event: { type: "x", window: { last_days: 1 }, measure: "count", op: ">", value: 1.5 } }).length,
    ).toBeGreaterThan(0);
    expect(check({ segment: "not-a-uuid" }).length).toBeGreaterThan(0);
    expect(check({ all: [] }).length).toBeGreaterThan(0);
    expect(check({ all: [highValue], any: [highValue] }).length).toBeGreaterThan(0);
    expect(check({ segment: randomUUID() })).toEqual([]);
  });
});

describe("docs/segment-definitions.md", () => {
  it("every JSON example is a valid definition", () => {
    const doc = readFileSync(new URL("../../../docs/segment-definitions.md", import.meta.url), "utf8");
    const examples = [...doc.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!));
    expect(examples.length).toBeGreaterThanOrEqual(4);
    for (const example of examples) expect(checkDefinition(example)).toMatchObject({ ok: true });
  });
});
