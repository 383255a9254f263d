import { randomUUID } from "node:crypto";
import { createPool, transaction } from "@crm/db";
import { createBusiness, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CompileError, type StoredSegment } from "./compile-sql.ts";
import { evaluateSegments } from "./evaluate.ts";
import type { SegmentDefinition } from "./validate.ts";

// The rule language's semantics, on the real database: hand-written cases with their expected members and next
// checks, and hostile definitions that must compile into a statement that runs, or be refused before any SQL.
describe("compiled segment definitions", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const pool = createPool({ connectionString: env.databaseUrl, applicationName: "compile-test", max: 2 });
  const now = new Date("2026-06-15T12:00:00Z");
  const daysAgo = (d: number) => new Date(now.getTime() - d * 86_400_000);
  let businessId: string;
  const contacts: Record<string, string> = {};

  async function contact(name: string, fields: Record<string, unknown> = {}) {
    const id = randomUUID();
    contacts[name] = id;
    await admin.query(
      `INSERT INTO crm_contacts (id, business_id, email, name, traits, first_seen_at, last_seen_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [
        id,
        businessId,
        fields.email ?? null,
        name,
        JSON.stringify(fields.traits ?? {}),
        fields.first_seen_at ?? daysAgo(100),
        fields.last_seen_at ?? daysAgo(1),
      ],
    );
  }
  async function event(name: string, type: string, at: Date, props: Record<string, unknown> = {}) {
    await admin.query(
      `INSERT INTO crm_events (id, business_id, contact_id, type, props, occurred_at) VALUES ($1, $2, $3, $4, $5, $6)`,
      [randomUUID(), businessId, contacts[name], type, JSON.stringify(props), at],
    );
  }

  async function evaluate(definition: unknown, others: StoredSegment[] = []) {
    const target = randomUUID();
    const segments = new Map<string, StoredSegment>(
      [...others, { id: target, version: 1, definition: definition as SegmentDefinition }].map((s) => [
        s.id,
        s,
      ]),
    );
    const rows = await transaction(
      pool,
      "compile_test",
      (client) =>
        evaluateSegments(client, { businessId, segments, targets: [target], scope: { kind: "all" }, now }),
      { businessId },
    );
    const byName = Object.fromEntries(Object.entries(contacts).map(([name, id]) => [id, name]));
    return {
      members: rows
        .filter((r) => r.matched)
        .map((r) => byName[r.contact_id])
        .sort(),
      next: Object.fromEntries(rows.map((r) => [byName[r.contact_id], r.next_check?.toISOString() ?? null])),
    };
  }

  beforeAll(async () => {
    ({ businessId } = await createBusiness(admin));
    await contact("ann", {
      email: "ann@example.com",
      traits: { plan: "pro", score: 7, signup: "2026-06-10" },
    });
    await contact("bob", { email: "bob@example.org", traits: { plan: "free", score: "7" } });
    await contact("cyd", { traits: { plan: ["pro"], signup: "now" }, first_seen_at: daysAgo(2) });
    await event("ann", "purchase", daysAgo(1), { amount: 300, currency: "EUR" });
    await event("ann", "purchase", daysAgo(10), { amount: 250, currency: "EUR" });
    await event("ann", "purchase", daysAgo(40), { amount: 1000 });
    await event("bob", "purchase", daysAgo(2), { amount: "600" });
    await event("bob", "login", daysAgo(3));
    await event("cyd", "login", daysAgo(20));
    await event("cyd", "purchase", daysAgo(100), { amount: 5 });
    // another business's events for the same contact id are never counted (and RLS hides them anyway)
  });
  afterAll(async () => {
    await admin.end();
    await pool.end();
  });

  it("high value: sum of purchase amount over 500 in 30 days (strings are not numbers)", async () => {
    const result = await evaluate({
      event: {
        type: "purchase",
        window: { last_days: 30 },
        measure: "sum",
        property: "amount",
        op: ">",
        value: 500,
      },
    });
    expect(result.members).toEqual(["ann"]);
    // ann's purchase of 10 days ago leaves the window first (in 20 days)
    expect(result.next.ann).toBe(new Date(daysAgo(10).getTime() + 30 * 86_400_000).toISOString());
  });

  it("at risk: no login in 14 days and at least one purchase ever", async () => {
    const result = await evaluate({
      all: [
        { no_event: { type: "login", last_days: 14 } },
        { event: { type: "purchase", window: { last_days: 3650 }, measure: "count", op: ">=", value: 1 } },
      ],
    });
    expect(result.members).toEqual(["ann", "cyd"]);
    // bob's login of 3 days ago leaves the 14-day window in 11 days: then he enters
    expect(result.next.bob).toBe(new Date(daysAgo(3).getTime() + 14 * 86_400_000).toISOString());
  });

  it("windows between N and M days ago, min/max/avg, where filters", async () => {
    const between = await evaluate({
      event: {
        type: "purchase",
        window: { from_days_ago: 60, to_days_ago: 30 },
        measure: "count",
        op: "=",
        value: 1,
      },
    });
    expect(between.members).toEqual(["ann"]);
    const eur = await evaluate({
      event: {
        type: "purchase",
        where: [{ property: "currency", op: "=", value: "EUR" }],
        window: { last_days: 30 },
        measure: "avg",
        property: "amount",
        op: "=",
        value: 275,
      },
    });
    expect(eur.members).toEqual(["ann"]);
    const noNumber = await evaluate({
      not: {
        event: {
          type: "purchase",
          window: { last_days: 30 },
          measure: "max",
          property: "amount",
          op: ">",
          value: 0,
        },
      },
    });
    expect(noNumber.members).toEqual(["bob", "cyd"]);
  });

  it("contact fields and traits: typed equality, in, contains, starts_with, exists, orderings, dates", async () => {
    const cases: Array<[unknown, string[]]> = [
      [{ contact: { field: "traits.plan", op: "=", value: "pro" } }, ["ann"]],
      [{ contact: { field: "traits.plan", op: "!=", value: "pro" } }, ["bob", "cyd"]],
      [{ contact: { field: "traits.plan", op: "in", value: ["pro", "free"] } }, ["ann", "bob"]],
      [{ contact: { field: "traits.score", op: ">=", value: 7 } }, ["ann"]],
      [{ contact: { field: "traits.score", op: "=", value: "7" } }, ["bob"]],
      [{ contact: { field: "email", op: "contains", value: "@example." } }, ["ann", "bob"]],
      [{ contact: { field: "email", op: "starts_with", value: "bob" } }, ["bob"]],
      [{ contact: { field: "email", op: "exists" } }, ["ann", "bob"]],
      [{ contact: { field: "name", op: "<", value: "b" } }, ["ann"]],
      [{ contact: { field: "first_seen_at", op: "within_last_days", value: 7 } }, ["cyd"]],
      [{ contact: { field: "traits.signup", op: "after", value: "2026-06-01T00:00:00Z" } }, ["ann"]],
      [{ contact: { field: "traits.signup", op: "within_last_days", value: 30 } }, ["ann"]],
      [{ contact: { field: "last_seen_at", op: "before", value: "2020-01-01T00:00:00Z" } }, []],
    ];
    for (const [definition, members] of cases) {
      expect((await evaluate(definition)).members, JSON.stringify(definition)).toEqual(members);
    }
    expect(
      (await evaluate({ contact: { field: "first_seen_at", op: "within_last_days", value: 7 } })).next.cyd,
    ).toBe(new Date(daysAgo(2).getTime() + 7 * 86_400_000).toISOString());
  });

  it("membership of another segment, through a chain; a missing or cyclic reference is a CompileError", async () => {
    const base: StoredSegment = {
      id: randomUUID(),
      version: 1,
      definition: {
        event: { type: "login", window: { last_days: 30 }, measure: "count", op: ">=", value: 1 },
      },
    };
    const middle: StoredSegment = { id: randomUUID(), version: 1, definition: { not: { segment: base.id } } };
    expect((await evaluate({ segment: middle.id }, [base, middle])).members).toEqual(["ann"]);
    await expect(evaluate({ segment: randomUUID() })).rejects.toThrow(CompileError);
    const a = randomUUID();
    const loop: StoredSegment = { id: a, version: 1, definition: { segment: a } };
    await expect(evaluate({ segment: a }, [loop])).rejects.toThrow(CompileError);
  });

  it("hostile definitions: refused before any SQL (CompileError) or a statement that runs, never an SQL error", async () => {
    const text = fc.string({ unit: "binary", maxLength: 30 });
    const scalar = fc.oneof(
      text,
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.integer(),
    );
    const op = fc.constantFrom("=", "!=", "<", "<=", ">", ">=", "contains", "starts_with", "in", "exists");
    const leaf = fc.oneof(
      fc.record({
        contact: fc.record({
          field: fc.oneof(
            fc.constantFrom("email", "name", "first_seen_at"),
            text.map((t) => `traits.${t}`),
          ),
          op: fc.oneof(op, fc.constantFrom("before", "after", "within_last_days")),
          value: fc.oneof(
            scalar,
            fc.array(scalar, { minLength: 1, maxLength: 3 }),
            fc.date().map((d) => d.toISOString()),
          ),
        }),
      }),
      fc.record({
        event: fc.record({
          type: text,
          where: fc.array(fc.record({ property: text, op, value: scalar }), { maxLength: 2 }),
          window: fc.oneof(
            fc.record({ last_days: fc.integer({ min: -2, max: 4000 }) }),
            fc.record({
              from_days_ago: fc.integer({ min: 0, max: 40 }),
              to_days_ago: fc.integer({ min: 0, max: 40 }),
            }),
          ),
          measure: fc.constantFrom("count", "sum", "min", "max", "avg"),
          property: text,
          op: fc.constantFrom("=", "!=", "<", ">="),
          value: fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })),
        }),
      }),
      fc.record({ no_event: fc.record({ type: text, last_days: fc.integer({ min: 0, max: 4000 }) }) }),
      fc.jsonValue(),
    );
    const definition = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        leaf,
        fc.record({ all: fc.array(tie("node"), { minLength: 1, maxLength: 3 }) }),
        fc.record({ not: tie("node") }),
      ),
    })).node;
    await fc.assert(
      fc.asyncProperty(definition, async (d) => {
        try {
          await evaluate(d);
        } catch (error) {
          expect(error).toBeInstanceOf(CompileError);
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 150) },
    );
  });

  // next_check is what lets a contact that is not a member have no row at all: it must never be later than a
  // time at which the result flips with no new event. Random histories (past and future events, negative, zero
  // and missing amounts) and random event atoms, evaluated at `now` and at later times around every event's entry
  // into and exit from the window: any later result that differs must come at or after next_check.
  it("next_check is never later than the first flip of the result with time alone", async () => {
    const DAY = 86_400_000;
    const leafOf = fc
      .oneof(
        fc.record({
          no_event: fc.record({ type: fc.constant("purchase"), last_days: fc.constantFrom(1, 3, 7) }),
        }),
        fc.record({
          event: fc.record({
            type: fc.constant("purchase"),
            window: fc.oneof(
              fc.constantFrom(1, 3, 7).map((d) => ({ last_days: d })),
              fc.constant({ from_days_ago: 7, to_days_ago: 2 }),
            ),
            measure: fc.constantFrom("count", "sum", "min", "max", "avg"),
            op: fc.constantFrom("=", "!=", "<", "<=", ">", ">="),
            value: fc.constantFrom(0, 1, 2, 10, 50),
          }),
        }),
      )
      .map((leaf) =>
        "event" in leaf && leaf.event.measure !== "count"
          ? { event: { ...leaf.event, property: "amount" } }
          : leaf,
      );
    const history = fc.array(
      fc.record({
        daysAgo: fc.double({ min: -3, max: 10, noNaN: true }),
        amount: fc.option(fc.constantFrom(-20, 0, 10, 40), { nil: undefined }),
      }),
      { maxLength: 6 },
    );
    await fc.assert(
      fc.asyncProperty(leafOf, history, async (leaf, events) => {
        const name = `t${randomUUID().slice(0, 8)}`;
        await contact(name);
        for (const e of events) {
          await event(
            name,
            "purchase",
            daysAgo(e.daysAgo),
            e.amount === undefined ? {} : { amount: e.amount },
          );
        }
        const target = randomUUID();
        const segments = new Map([
          [target, { id: target, version: 1, definition: leaf as SegmentDefinition }],
        ]);
        const at = (when: Date) =>
          transaction(
            pool,
            "compile_test",
            async (client) =>
              (
                await evaluateSegments(client, {
                  businessId,
                  segments,
                  targets: [target],
                  scope: { kind: "contacts", contactIds: [contacts[name]!] },
                  now: when,
                })
              )[0]!,
            { businessId },
          );
        const first = await at(now);
        // later times: just before and after each event enters or leaves any window of the vocabulary
        const later = new Set<number>([now.getTime() + 20 * DAY]);
        for (const e of events) {
          const t = daysAgo(e.daysAgo).getTime();
          for (const span of [0, 1, 2, 3, 7]) {
            for (const edge of [-1, 1]) later.add(t + span * DAY + edge);
          }
        }
        for (const t of [...later].filter((t) => t > now.getTime()).sort((a, b) => a - b)) {
          const result = await at(new Date(t));
          if (result.matched !== first.matched) {
            expect(first.next_check, `flips at ${new Date(t).toISOString()}`).not.toBeNull();
            expect(first.next_check!.getTime()).toBeLessThanOrEqual(t);
            break;
          }
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 60), endOnFailure: true },
    );
  });
});
