import { randomUUID } from "node:crypto";
import { createPool } from "@crm/db";
import type { RawEventV1 } from "@crm/schemas";
import { createBusiness, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { type ResolveResult, resolveContact, resolveContacts } from "./resolve-contact.ts";

// Issue 13: app.resolve_contacts applies a chunk set-based (waves of non-conflicting events, the simple ones in one
// statement per kind of row). Its contract is SPEC 7's "the same result as one by one": on random identity graphs
// (few identifiers, so merges, conflicts, anonymous takeovers, aliases, junk values and redeliveries are common),
// a business fed in chunks ends exactly like a business fed the same events one by one: contacts, identities,
// conflicts, event rows, outbox payloads and each event's outcome, modulo generated ids.
const env = testEnv();
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
const service = createPool({
  connectionString: env.databaseUrl,
  applicationName: "resolve-contacts-test",
  max: 8,
});
const RUNS = Number(process.env.FUZZ_RUNS ?? 40);

afterAll(async () => {
  await Promise.all([admin.end(), service.end()]);
});

/** One event of the graph; `lane` prefixes every identifier, so events of two lanes never meet. */
interface GraphEvent {
  ext?: number;
  email?: number;
  phone?: number;
  anon?: number;
  prev?: { kind: "ext" | "anon"; id: number };
  name?: number;
  traits?: Record<string, number | string | null>;
  at: number;
  /** Send again the event this many positions back (a redelivery) instead of a new one. */
  again?: number;
}

const upTo = (max: number) => fc.integer({ min: 0, max });
/** `arbitrary` in about `percent`% of the values, else undefined. */
const sometimes = <T>(arbitrary: fc.Arbitrary<T>, percent: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: 100 - percent }, { arbitrary, weight: percent });
// Few identifiers, so events meet: merges, conflicts (two external ids), anonymous takeovers, aliases, junk values,
// redeliveries; and enough events that meet nothing, which the set-based path applies together.
const graphEvent: fc.Arbitrary<GraphEvent> = fc.record({
  // 3 is the junk value "null" for external ids
  ext: sometimes(upTo(3), 30),
  email: sometimes(upTo(5), 60),
  phone: sometimes(upTo(5), 35),
  anon: sometimes(upTo(3), 25),
  prev: sometimes(fc.record({ kind: fc.constantFrom("ext" as const, "anon" as const), id: upTo(3) }), 10),
  name: sometimes(upTo(2), 50),
  traits: sometimes(
    fc.dictionary(fc.constantFrom("plan", "seats", "tier"), fc.oneof(upTo(3), fc.constant(null)), {
      maxKeys: 2,
    }),
    30,
  ),
  // few distinct times: equal occurred_at (ties) happen
  at: upTo(4),
  again: sometimes(fc.integer({ min: 1, max: 4 }), 8),
});

/**
 * Found by this test: e1 and e2 meet only through the contact e0 creates in the same chunk; applied in one wave,
 * e1's activity-only update overwrote e2's (one UPDATE row per contact), so waves follow components, not pairs.
 */
const TWO_ON_A_NEW_CONTACT: GraphEvent[] = [
  { ext: 0, phone: 5, anon: 0, traits: {}, at: 0 },
  { anon: 0, at: 0 },
  { phone: 5, anon: 1, at: 0 },
  { at: 0 },
];

/** The graph's events as the worker would decode them (normalized values), with fresh event ids. */
function toRawEvents(businessId: string, graph: GraphEvent[], lane = 0): RawEventV1[] {
  const base = Date.parse("2026-01-01T00:00:00Z");
  const events: RawEventV1[] = [];
  for (const [i, g] of graph.entries()) {
    const earlier = g.again === undefined ? undefined : events[i - g.again];
    if (earlier) {
      events.push(earlier);
      continue;
    }
    const contact: RawEventV1["contact"] = {};
    if (g.ext !== undefined) contact.external_id = g.ext === 3 ? "null" : `l${lane}-acct-${g.ext}`;
    if (g.email !== undefined) contact.email = `l${lane}-p${g.email}@example.com`;
    if (g.phone !== undefined) contact.phone = `+1555${lane}00000${g.phone}`;
    if (g.anon !== undefined) contact.anonymous_id = `l${lane}-anon-${g.anon}`;
    if (g.prev !== undefined) {
      contact.previous_id =
        g.prev.kind === "ext" ? `l${lane}-acct-${g.prev.id}` : `l${lane}-anon-${g.prev.id}`;
    }
    if (g.name !== undefined) contact.name = `Name ${g.name}`;
    if (g.traits !== undefined) contact.traits = g.traits;
    events.push({
      event_id: randomUUID(),
      business_id: businessId,
      type: "graph",
      contact,
      props: { i },
      occurred_at: new Date(base + g.at * 1_000).toISOString(),
      received_at: new Date().toISOString(),
      source: { kind: "ingest_key", id_hash: "test" },
    });
  }
  return events;
}

function slices<T>(items: T[], sizes: number[]): T[][] {
  const out: T[][] = [];
  let at = 0;
  for (let i = 0; at < items.length; i++) {
    const size = sizes.length > 0 ? sizes[i % sizes.length]! : items.length;
    out.push(items.slice(at, at + size));
    at += size;
  }
  return out;
}

/**
 * What a business ended with, ids replaced by stable names: a contact by the index of the first event whose result
 * is that contact (every contact is created by an event, which returns it), an event by its index in the input.
 */
async function snapshot(businessId: string, events: RawEventV1[], results: ResolveResult[]) {
  const contactName = new Map<string, string>();
  results.forEach((result, i) => {
    if (!contactName.has(result.contactId)) contactName.set(result.contactId, `c${i}`);
  });
  const eventName = new Map<string, string>();
  events.forEach((event, i) => {
    if (!eventName.has(event.event_id)) eventName.set(event.event_id, `e${i}`);
  });
  const c = (id: string | null) => (id === null ? null : (contactName.get(id) ?? `unnamed ${id}`));
  const q = async (sql: string) => (await admin.query(sql, [businessId])).rows;
  const contacts = (
    await q(`SELECT id, external_id, email, phone, name, name_at, version, merged_into, first_seen_at,
                    last_seen_at, traits, traits_at FROM crm_contacts WHERE business_id = $1`)
  )
    .map((row) => ({ ...row, id: c(row.id), merged_into: c(row.merged_into) }))
    .sort((a, b) => String(a.id).localeCompare(String(b.id)));
  const identities = (
    await q("SELECT type, value, contact_id FROM contact_identities WHERE business_id = $1")
  )
    .map((row) => `${row.type}:${row.value}:${c(row.contact_id)}`)
    .sort();
  const conflicts = (
    await q(`SELECT event_id, contact_id, other_contact, type, value, reason FROM identity_conflicts
             WHERE business_id = $1`)
  )
    .map((row) =>
      JSON.stringify([
        eventName.get(row.event_id),
        c(row.contact_id),
        c(row.other_contact),
        row.type,
        row.value,
        row.reason,
      ]),
    )
    .sort();
  const eventRows = (
    await q("SELECT id, contact_id, type, props, contact, occurred_at FROM crm_events WHERE business_id = $1")
  )
    .map((row) => ({ ...row, id: eventName.get(row.id), contact_id: c(row.contact_id) }))
    .sort((a, b) => String(a.id).localeCompare(String(b.id)));
  // per contact, its changes in version order (a contact's every outbox row bumps or sets its version)
  const outbox = (await q("SELECT type, aggregateid, payload FROM outbox WHERE business_id = $1"))
    .map((row) => {
      const { business_id: _business, ...payload } = row.payload;
      return {
        type: row.type,
        aggregate: c(row.aggregateid),
        ...payload,
        contact_id: c(payload.contact_id),
        merged_into: payload.merged_into === undefined ? undefined : c(payload.merged_into),
        merged_from: payload.merged_from?.map((id: string) => c(id)),
        cause_event_id: eventName.get(payload.cause_event_id),
      };
    })
    .sort(
      (a, b) =>
        String(a.aggregate).localeCompare(String(b.aggregate)) || Number(a.version) - Number(b.version),
    );
  const outcomes = results.map((r) => [c(r.contactId), r.outcome, r.outboxRows, r.merged, r.conflicts]);
  return { contacts, identities, conflicts, eventRows, outbox, outcomes };
}

/** Applies events one by one, in order: the reference. */
async function oneByOne(events: RawEventV1[]): Promise<ResolveResult[]> {
  const results: ResolveResult[] = [];
  for (const event of events) results.push(await resolveContact(service, event));
  return results;
}

const withEventIds = (events: RawEventV1[], businessId: string): RawEventV1[] => {
  // the same graph in another business needs other event ids (they are global keys); redeliveries stay redeliveries
  const renamed = new Map<string, string>();
  return events.map((event) => {
    if (!renamed.has(event.event_id)) renamed.set(event.event_id, randomUUID());
    return { ...event, business_id: businessId, event_id: renamed.get(event.event_id)! };
  });
};

describe("resolve_contacts (set-based) gives exactly the one-by-one result", () => {
  it("on random identity graphs, chunk by chunk", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(graphEvent, { minLength: 1, maxLength: 30 }),
        fc.array(fc.integer({ min: 1, max: 30 }), { maxLength: 4 }),
        async (graph, sizes) => {
          const reference = (await createBusiness(admin)).businessId;
          const chunked = (await createBusiness(admin)).businessId;
          const events = toRawEvents(reference, graph);
          const expected = await snapshot(reference, events, await oneByOne(events));
          const same = withEventIds(events, chunked);
          const results: ResolveResult[] = [];
          for (const chunk of slices(same, sizes)) results.push(...(await resolveContacts(service, chunk)));
          expect(await snapshot(chunked, same, results)).toEqual(expected);
        },
      ),
      { numRuns: RUNS, examples: [[TWO_ON_A_NEW_CONTACT, []]] },
    );
  });

  it("with chunks of several lanes running at once on their own connections (one business)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(graphEvent, { minLength: 1, maxLength: 20 }), { minLength: 2, maxLength: 4 }),
        fc.array(fc.integer({ min: 1, max: 20 }), { maxLength: 3 }),
        async (lanes, sizes) => {
          const reference = (await createBusiness(admin)).businessId;
          const chunked = (await createBusiness(admin)).businessId;
          // lanes never share an identifier: any interleaving of their chunks equals lane after lane
          const byLane = lanes.map((graph, lane) => toRawEvents(reference, graph, lane));
          const events = byLane.flat();
          const expected = await snapshot(reference, events, await oneByOne(events));
          const renamed = withEventIds(events, chunked);
          let at = 0;
          const laneEvents = byLane.map((lane) => {
            const part = renamed.slice(at, at + lane.length);
            at += lane.length;
            return part;
          });
          const laneResults = await Promise.all(
            laneEvents.map(async (lane) => {
              const results: ResolveResult[] = [];
              for (const chunk of slices(lane, sizes))
                results.push(...(await resolveContacts(service, chunk)));
              return results;
            }),
          );
          expect(await snapshot(chunked, renamed, laneResults.flat())).toEqual(expected);
        },
      ),
      { numRuns: Math.max(1, Math.round(RUNS / 3)) },
    );
  });
});
