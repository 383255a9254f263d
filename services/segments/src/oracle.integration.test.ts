import { transaction } from "@crm/db";
import { poll, type ServiceProcess } from "@crm/process";
import { updateSegment } from "@crm/segment-definitions";
import { createBusiness, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  applyEvent,
  changeLogProblems,
  consistentState,
  defineSegment,
  servicePool,
  startSegmentsService,
  type TestEvent,
} from "./test-harness.ts";

const DAY = 86_400_000;

// Random rules over a small vocabulary, so that random events often make them true and false.
const TYPES = ["purchase", "login", "view"] as const;
const days = fc.constantFrom(1, 2, 3, 7, 14, 30);
const comparison = fc.constantFrom("=", "!=", "<", "<=", ">", ">=");
const leaf = fc.oneof(
  fc.record({
    event: fc.oneof(
      fc.record({
        type: fc.constantFrom(...TYPES),
        window: days.map((d) => ({ last_days: d })),
        measure: fc.constant("count"),
        op: comparison,
        value: fc.integer({ min: 0, max: 3 }),
      }),
      fc.record({
        type: fc.constant("purchase"),
        where: fc.constantFrom([], [{ property: "currency", op: "=", value: "EUR" }]),
        window: fc.oneof(
          days.map((d) => ({ last_days: d })),
          fc.constant({ from_days_ago: 14, to_days_ago: 2 }),
        ),
        measure: fc.constantFrom("sum", "min", "max", "avg"),
        property: fc.constant("amount"),
        op: comparison,
        value: fc.constantFrom(0, 50, 100, 250),
      }),
    ),
  }),
  fc.record({ no_event: fc.record({ type: fc.constantFrom(...TYPES), last_days: days }) }),
  fc.record({
    contact: fc.oneof(
      fc.record({
        field: fc.constant("traits.plan"),
        op: fc.constantFrom("=", "!="),
        value: fc.constantFrom("pro", "free"),
      }),
      fc.record({ field: fc.constant("traits.plan"), op: fc.constant("exists") }),
      fc.record({
        field: fc.constant("email"),
        op: fc.constant("contains"),
        value: fc.constantFrom("a", "b", "1"),
      }),
      fc.record({ field: fc.constant("last_seen_at"), op: fc.constant("within_last_days"), value: days }),
    ),
  }),
);
const rule = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaf,
    leaf,
    fc.record({ all: fc.array(tie("node"), { minLength: 1, maxLength: 3 }) }),
    fc.record({ any: fc.array(tie("node"), { minLength: 1, maxLength: 3 }) }),
    fc.record({ not: tie("node") }),
  ),
})).node;

const person = fc.integer({ min: 0, max: 5 });
const event = fc.record({
  type: fc.constantFrom(...TYPES),
  // who: by email, by phone, or both (which merges the two contacts when each exists on its own)
  email: fc.option(person, { nil: undefined }),
  phone: fc.option(person, { nil: undefined }),
  daysAgo: fc.double({ min: 0, max: 31, noNaN: true }),
  amount: fc.option(fc.constantFrom(10, 60, 120, 300), { nil: undefined }),
  currency: fc.constantFrom("EUR", "USD"),
  plan: fc.option(fc.constantFrom("pro", "free"), { nil: undefined }),
});
const scenario = fc.record({
  rules: fc.array(rule, { minLength: 1, maxLength: 3 }),
  // a rule naming the first segment, and an edit made halfway
  naming: rule,
  edit: rule,
  events: fc.array(event, { minLength: 6, maxLength: 30 }),
});

// The oracle: random rules and random histories (late events, merges, an edit halfway); at each checkpoint
// the memberships the service keeps incrementally equal a from-scratch evaluation over crm_events and crm_contacts,
// and the published log of changes alternates per (segment, contact) and ends at that state.
describe("segments: incremental membership equals from-scratch evaluation", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const pool = servicePool();
  let service: ServiceProcess;

  beforeAll(async () => {
    service = await startSegmentsService({ SEGMENTS_SWEEP_INTERVAL_MS: "500" });
  });
  afterAll(async () => {
    await service?.stop();
    await pool.end();
    await admin.end();
  });

  it("at several checkpoints, for random rules and events", async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const { businessId } = await createBusiness(admin);
        const tag = businessId.slice(0, 8);
        const segments: string[] = [];
        for (const [i, r] of s.rules.entries())
          segments.push(await defineSegment(pool, businessId, `r${i}`, r));
        segments.push(
          await defineSegment(pool, businessId, "naming", { all: [{ segment: segments[0] }, s.naming] }),
        );
        const checkpoint = async (label: string) => {
          // State, oracle and log in one snapshot: the service keeps committing while the test reads.
          let last: Awaited<ReturnType<typeof consistentState>> | undefined;
          await poll(
            `memberships of ${tag} equal to the oracle (${label})`,
            async () => {
              last = await consistentState(pool, businessId);
              return JSON.stringify(last.stored) === JSON.stringify(last.oracle) ? true : undefined;
            },
            { timeoutMs: 60_000, throwOnTimeout: false },
          );
          expect(last?.stored, label).toEqual(last?.oracle);
          if (process.env.ORACLE_DEBUG) console.log(`[oracle] ${label}: ${last?.stored.length} members`);
          expect(changeLogProblems(last!.changes, last!.stored), label).toEqual([]);
        };
        const now = Date.now();
        const thirds = [s.events.length / 3, (2 * s.events.length) / 3].map(Math.floor);
        for (const [i, e] of s.events.entries()) {
          const sent: TestEvent = {
            type: e.type,
            email: e.email === undefined && e.phone === undefined ? `p0.${tag}@example.com` : undefined,
            occurredAt: new Date(now - e.daysAgo * DAY),
            props: { ...(e.amount === undefined ? {} : { amount: e.amount }), currency: e.currency },
            ...(e.plan ? { traits: { plan: e.plan } } : {}),
          };
          if (e.email !== undefined) sent.email = `p${e.email}.${tag}@example.com`;
          if (e.phone !== undefined)
            sent.phone = `+1555${tag.replace(/\D/g, "").padEnd(4, "7").slice(0, 4)}00${e.phone}`;
          await applyEvent(pool, businessId, sent);
          if (i === thirds[0]) await checkpoint("first third");
          if (i === thirds[1]) {
            await checkpoint("second third");
            await transaction(
              pool,
              "test_edit",
              (client) =>
                updateSegment(client, { businessId, id: segments[0]!, definition: s.edit, changedBy: null }),
              { businessId },
            );
          }
        }
        await checkpoint("end");
      }),
      {
        numRuns: Number(process.env.FUZZ_RUNS ?? 4),
        endOnFailure: true,
        ...(process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED) } : {}),
      },
    );
  });
});
