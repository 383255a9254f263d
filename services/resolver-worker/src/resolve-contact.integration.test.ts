import { createPool, isTransientDbError } from "@crm/db";
import type { RawEventV1 } from "@crm/schemas";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { decodeRawEvent } from "./decode-event.ts";
import { resolveContact, resolveContacts } from "./resolve-contact.ts";
import {
  actualContacts,
  type Contact,
  expectedContacts,
  identityGroups,
  invariantViolations,
  overlappingLoad,
  rawEvent,
} from "./test-harness.ts";

// The resolve transaction (SPEC 7) against the real Postgres, as the worker runs it: service role, tenant set
// per transaction, app.resolve_contact. Every business is fresh, so tests never see each other's rows.
const env = testEnv();
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
const service = createPool({ connectionString: env.databaseUrl, applicationName: "resolver-test", max: 12 });

afterAll(async () => {
  await Promise.all([admin.end(), service.end()]);
});

/** Decodes the event like the consumer does (normalization included) and applies it. */
const apply = (event: RawEventV1) =>
  resolveContact(service, decodeRawEvent(Buffer.from(JSON.stringify(event))));

async function rows<T extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<T[]> {
  return (await admin.query<T>(sql, params)).rows;
}

const liveContacts = (businessId: string) =>
  rows<{ id: string; external_id: string | null; name: string | null; version: string }>(
    "SELECT * FROM crm_contacts WHERE business_id = $1 AND merged_into IS NULL",
    [businessId],
  );

function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
  );
}

const ACCT = "acct_42";
const EMAIL = "alice@example.com";
const PHONE = "+15551234567";

describe("identity resolution", () => {
  it("seed: acct_42, alice@example.com and +15551234567 end on one contact whatever the combinations and order", async () => {
    const shapes: Contact[][] = [
      [
        { external_id: ACCT },
        { email: EMAIL },
        { phone: PHONE },
        { external_id: ACCT, email: EMAIL, phone: PHONE },
      ],
      [{ external_id: ACCT, email: EMAIL }, { email: EMAIL, phone: PHONE }, { phone: PHONE }],
      [{ external_id: ACCT, phone: PHONE }, { email: EMAIL }, { email: EMAIL, phone: PHONE }],
    ];
    const runs = shapes.flatMap((shape) => permutations(shape));
    expect(runs.length).toBe(24 + 6 + 6);
    const businesses: string[] = [];
    await Promise.all(
      runs.map(async (run) => {
        const { businessId } = await createBusiness(admin);
        businesses.push(businessId);
        for (const contact of run) await apply(rawEvent(businessId, contact));
        const owners = await rows<{ contact_id: string }>(
          `SELECT DISTINCT contact_id FROM contact_identities
           WHERE business_id = $1 AND (type, value) IN (('external_id', $2), ('email', $3), ('phone', $4))`,
          [businessId, ACCT, EMAIL, PHONE],
        );
        const identities = await rows("SELECT 1 FROM contact_identities WHERE business_id = $1", [
          businessId,
        ]);
        expect(identities).toHaveLength(3);
        expect(owners).toHaveLength(1);
        const live = await liveContacts(businessId);
        expect(live.map((c) => c.id)).toEqual([owners[0]!.contact_id]);
        expect(live[0]!.external_id).toBe(ACCT);
        const events = await rows("SELECT 1 FROM crm_events WHERE business_id = $1 AND contact_id = $2", [
          businessId,
          owners[0]!.contact_id,
        ]);
        expect(events).toHaveLength(run.length);
      }),
    );
    expect(await invariantViolations(admin, businesses)).toEqual([]);
  });

  it("normalization: spellings of one email or one phone are one identity", async () => {
    const { businessId } = await createBusiness(admin);
    const a = await apply(rawEvent(businessId, { email: "Alice@Example.COM " }));
    const b = await apply(rawEvent(businessId, { email: "alice@example.com" }));
    const c = await apply(rawEvent(businessId, { email: "ａlice@example.com" })); // fullwidth a, NFKC
    expect(new Set([a.contactId, b.contactId, c.contactId]).size).toBe(1);
    const p = await apply(rawEvent(businessId, { phone: "+15551234567" }));
    const q = await apply(rawEvent(businessId, { phone: "+15551234567", email: "ALICE@example.com" }));
    expect(q.contactId).toBe(a.contactId);
    expect(q.outcome).toBe("merged");
    expect(p.contactId).not.toBe(a.contactId);
    expect(await identityGroups(admin, businessId)).toEqual(["email:alice@example.com phone:+15551234567"]);
  });

  it("junk values are kept on the event and never link identities", async () => {
    const { businessId } = await createBusiness(admin);
    const a = await apply(rawEvent(businessId, { external_id: "guest", email: "a@example.com" }));
    const b = await apply(rawEvent(businessId, { external_id: "GUEST", email: "b@example.com" }));
    expect(a.contactId).not.toBe(b.contactId);
    expect(await identityGroups(admin, businessId)).toEqual(["email:a@example.com", "email:b@example.com"]);
    const [event] = await rows<{ contact: Contact }>(
      "SELECT contact FROM crm_events WHERE business_id = $1 AND contact_id = $2",
      [businessId, a.contactId],
    );
    expect(event!.contact).toMatchObject({ external_id: "guest" });
  });

  it("merge: email on A and phone on B, then both -> one survivor, B merged into it, outbox merged + merged_away", async () => {
    const { businessId } = await createBusiness(admin);
    const a = await apply(
      rawEvent(businessId, { email: EMAIL, name: "Alice" }, { occurredAt: new Date(1_000) }),
    );
    const b = await apply(rawEvent(businessId, { phone: PHONE }, { occurredAt: new Date(2_000) }));
    expect(a.contactId).not.toBe(b.contactId);
    const both = rawEvent(businessId, { email: EMAIL, phone: PHONE }, { occurredAt: new Date(3_000) });
    const merged = await apply(both);
    // The survivor owns the highest-priority identifier of the event: the email.
    expect(merged).toMatchObject({ contactId: a.contactId, outcome: "merged", merged: 1, outboxRows: 2 });

    const [loser] = await rows<{ merged_into: string; version: string }>(
      "SELECT merged_into, version FROM crm_contacts WHERE id = $1",
      [b.contactId],
    );
    expect(loser!.merged_into).toBe(a.contactId);
    expect(await identityGroups(admin, businessId)).toEqual([`email:${EMAIL} phone:${PHONE}`]);
    const events = await rows<{ contact_id: string }>(
      "SELECT DISTINCT contact_id FROM crm_events WHERE business_id = $1",
      [businessId],
    );
    expect(events).toEqual([{ contact_id: a.contactId }]);
    const [survivor] = await liveContacts(businessId);
    expect(survivor).toMatchObject({ email: EMAIL, phone: PHONE, name: "Alice", version: "2" });

    const outbox = await rows<{ aggregateid: string; type: string; payload: Record<string, unknown> }>(
      "SELECT aggregateid, type, payload FROM outbox WHERE business_id = $1 AND payload->>'cause_event_id' = $2",
      [businessId, both.event_id],
    );
    expect(outbox).toHaveLength(2);
    expect(outbox.find((o) => o.type === "contact.merged")!.payload).toMatchObject({
      contact_id: a.contactId,
      change: "merged",
      version: 2,
      merged_from: [b.contactId],
      identities: [
        { type: "email", value: EMAIL },
        { type: "phone", value: PHONE },
      ],
    });
    expect(outbox.find((o) => o.type === "contact.merged_away")!.payload).toMatchObject({
      contact_id: b.contactId,
      change: "merged_away",
      version: 2,
      merged_into: a.contactId,
      identities: [],
    });
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("conflict: two different external_ids never end on one contact, whatever the order", async () => {
    const events: Contact[] = [
      { external_id: "acct_1", email: "shared@example.com" },
      { external_id: "acct_2", email: "shared@example.com" },
      { external_id: "acct_2", phone: PHONE },
      { email: "shared@example.com", phone: PHONE },
      { external_id: "acct_1", phone: PHONE },
    ];
    const runs = permutations(events);
    expect(runs).toHaveLength(120);
    const businesses: string[] = [];
    await Promise.all(
      runs.map(async (run) => {
        const { businessId } = await createBusiness(admin);
        businesses.push(businessId);
        for (const contact of run) await apply(rawEvent(businessId, contact));
        const owners = await rows<{ value: string; contact_id: string }>(
          "SELECT value, contact_id FROM contact_identities WHERE business_id = $1 AND type = 'external_id'",
          [businessId],
        );
        expect(owners).toHaveLength(2);
        expect(owners[0]!.contact_id).not.toBe(owners[1]!.contact_id);
        const conflicts = await rows("SELECT 1 FROM identity_conflicts WHERE business_id = $1", [businessId]);
        expect(conflicts.length).toBeGreaterThan(0);
        // every event landed on a live contact; no identifier has two owners (the unique key guarantees it)
        expect(await rows("SELECT 1 FROM crm_events WHERE business_id = $1", [businessId])).toHaveLength(5);
      }),
    );
    expect(await invariantViolations(admin, businesses)).toEqual([]);
  });

  it("redelivery: the same event twice -> one event row, no extra outbox row", async () => {
    const { businessId } = await createBusiness(admin);
    const event = rawEvent(businessId, { email: EMAIL, name: "Alice" });
    const first = await apply(event);
    const outboxBefore = await rows("SELECT id FROM outbox WHERE business_id = $1", [businessId]);
    const second = await apply(event);
    expect(first.outcome).toBe("created");
    expect(second).toMatchObject({ contactId: first.contactId, outcome: "duplicate", outboxRows: 0 });
    expect(await rows("SELECT 1 FROM crm_events WHERE id = $1", [event.event_id])).toHaveLength(1);
    expect(await rows("SELECT id FROM outbox WHERE business_id = $1", [businessId])).toEqual(outboxBefore);
    // and concurrently: the event id is locked, so only one of ten copies applies
    const copy = rawEvent(businessId, { phone: PHONE });
    const outcomes = await Promise.all(Array.from({ length: 10 }, () => apply(copy)));
    expect(outcomes.filter((o) => o.outcome !== "duplicate")).toHaveLength(1);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("late event: an older occurred_at does not overwrite a newer name, and changes nothing visible", async () => {
    const { businessId } = await createBusiness(admin);
    const now = Date.now();
    const newer = await apply(
      rawEvent(businessId, { email: EMAIL, name: "Alice Newer" }, { occurredAt: new Date(now) }),
    );
    const late = await apply(
      rawEvent(businessId, { email: EMAIL, name: "Alice Older" }, { occurredAt: new Date(now - 3_600_000) }),
    );
    expect(late).toMatchObject({ contactId: newer.contactId, outcome: "unchanged", outboxRows: 0 });
    const [contact] = await liveContacts(businessId);
    expect(contact).toMatchObject({ name: "Alice Newer", version: "1" });
    const [seen] = await rows<{ first_seen_at: Date; last_seen_at: Date }>(
      "SELECT first_seen_at, last_seen_at FROM crm_contacts WHERE id = $1",
      [newer.contactId],
    );
    expect(seen!.first_seen_at.getTime()).toBe(now - 3_600_000);
    expect(seen!.last_seen_at.getTime()).toBe(now);
    // a newer event still wins
    const latest = await apply(
      rawEvent(businessId, { email: EMAIL, name: "Alice Latest" }, { occurredAt: new Date(now + 1) }),
    );
    expect(latest.outcome).toBe("updated");
    expect((await liveContacts(businessId))[0]).toMatchObject({ name: "Alice Latest", version: "2" });
  });

  it("seed regression 2: 10 parallel events with the same email -> exactly 1 contact", async () => {
    const { businessId } = await createBusiness(admin);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        apply(rawEvent(businessId, { email: EMAIL }, { props: { idemKey: `test-${i}` } })),
      ),
    );
    expect(new Set(results.map((r) => r.contactId)).size).toBe(1);
    expect(results.filter((r) => r.outcome === "created")).toHaveLength(1);
    expect(
      await rows("SELECT 1 FROM crm_contacts WHERE business_id = $1 AND email = $2", [businessId, EMAIL]),
    ).toHaveLength(1);
  });

  it("parallel merges over shared contacts neither deadlock nor lose an identity", async () => {
    // Chains a0-a1-a2-...: every event joins two neighbours, all at once, so merges race over shared contacts.
    const { businessId } = await createBusiness(admin);
    const emails = Array.from({ length: 30 }, (_, i) => `n${i}@example.com`);
    const phones = Array.from({ length: 30 }, (_, i) => `+1555000${String(i).padStart(4, "0")}`);
    await Promise.all(emails.map((email) => apply(rawEvent(businessId, { email }))));
    await Promise.all(phones.map((phone) => apply(rawEvent(businessId, { phone }))));
    const joins = emails.flatMap((email, i) => [
      rawEvent(businessId, { email, phone: phones[i]! }),
      rawEvent(businessId, { email: emails[(i + 1) % emails.length]!, phone: phones[i]! }),
    ]);
    const failures: unknown[] = [];
    await Promise.all(
      joins.map(async (event) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await apply(event);
          } catch (error) {
            failures.push((error as { code?: string }).code);
            if (attempt >= 5) throw error;
          }
        }
      }),
    );
    expect(await identityGroups(admin, businessId)).toEqual([
      [...emails.map((e) => `email:${e}`), ...phones.map((p) => `phone:${p}`)].sort().join(" "),
    ]);
    expect(await liveContacts(businessId)).toHaveLength(1);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
    // Deadlocks are retried by the worker; report how many this needed, fail only if it was not rare.
    console.log(`[resolve] parallel merge retries: ${failures.length} ${JSON.stringify(failures)}`);
    expect(failures.length).toBeLessThanOrEqual(3);
  });
});

describe("several events in one transaction (resolve_contacts)", () => {
  const decode = (event: RawEventV1) => decodeRawEvent(Buffer.from(JSON.stringify(event)));

  it("ends exactly as one by one, with overlapping identities, late events and merges, chunks in parallel", async () => {
    const { businessId } = await createBusiness(admin);
    const events = overlappingLoad(businessId, 30, 8).map(decode);
    // chunks of 10 run four at a time, as the worker's runners do; deadlocks between chunks are retried one by one
    const chunks = Array.from({ length: Math.ceil(events.length / 10) }, (_, i) =>
      events.slice(i * 10, i * 10 + 10),
    );
    let fellBack = 0;
    const resolveRetryingDeadlocks = async (event: RawEventV1): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        try {
          await resolveContact(service, event);
          return;
        } catch (error) {
          if (!isTransientDbError(error) || attempt >= 5) throw error;
        }
      }
    };
    const pending = [...chunks];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let chunk = pending.shift(); chunk; chunk = pending.shift()) {
          try {
            const results = await resolveContacts(service, chunk);
            expect(results).toHaveLength(chunk.length);
          } catch {
            fellBack++;
            // as the worker does: a one-by-one event can still deadlock with a chunk running beside it; retry it
            for (const event of chunk) await resolveRetryingDeadlocks(event);
          }
        }
      }),
    );
    console.log(`[resolve_contacts] chunks redone one by one: ${fellBack} of ${chunks.length}`);
    expect(await actualContacts(admin, businessId)).toEqual(expectedContacts(events));
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("a chunk with a failing event applies none of its events, and its results come back in input order", async () => {
    const { businessId } = await createBusiness(admin);
    const good = decode(rawEvent(businessId, { email: "chunk-a@example.com" }));
    // a tenant that does not exist: resolve_contact raises (23503) after the good event was applied
    const bad = decode(rawEvent("00000000-0000-4000-8000-000000000000", { email: "chunk-b@example.com" }));
    await expect(resolveContacts(service, [good, bad])).rejects.toThrow();
    expect(await rows("SELECT id FROM crm_events WHERE id = $1", [good.event_id])).toEqual([]);

    const second = decode(rawEvent(businessId, { email: "chunk-a@example.com", name: "A" }));
    const results = await resolveContacts(service, [good, second, good]);
    expect(results.map((r) => r.outcome)).toEqual(["created", "updated", "duplicate"]);
    expect(new Set(results.map((r) => r.contactId)).size).toBe(1);
    expect(
      await rows("SELECT type FROM outbox WHERE business_id = $1 ORDER BY created_at", [businessId]),
    ).toHaveLength(2);
  });
});
