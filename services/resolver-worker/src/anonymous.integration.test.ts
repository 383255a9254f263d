import { createPool, isTransientDbError } from "@crm/db";
import { partitionKey } from "@crm/identity";
import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { topicValidator } from "@crm/schema-registry";
import type { ContactUpdatedV1, RawEventV1 } from "@crm/schemas";
import { createBusiness, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeRawEvent } from "./decode-event.ts";
import { resolveContact, resolveContacts } from "./resolve-contact.ts";
import {
  type Contact,
  createWorkerTopics,
  dropWorkerTopics,
  identityGroups,
  invariantViolations,
  RawEventProducer,
  rawEvent,
  startWorker,
  type WorkerTopics,
} from "./test-harness.ts";

// Anonymous visitors, alias and traits (issue 15 points 2 and 3) against the real Postgres, as the worker applies
// events: decoded (normalized) first, then app.resolve_contact under the service role with the tenant set.
const env = testEnv();
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
const service = createPool({ connectionString: env.databaseUrl, applicationName: "anonymous-test", max: 12 });

afterAll(async () => {
  await Promise.all([admin.end(), service.end()]);
});

const decode = (event: RawEventV1) => decodeRawEvent(Buffer.from(JSON.stringify(event)));
const apply = (event: RawEventV1) => resolveContact(service, decode(event));
const at = (minute: number) => new Date(Date.UTC(2026, 10, 1, 12, minute));

async function rows<T extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<T[]> {
  return (await admin.query<T>(sql, params)).rows;
}

const liveContacts = (businessId: string) =>
  rows<{ id: string; external_id: string | null; traits: Record<string, unknown>; version: string }>(
    "SELECT * FROM crm_contacts WHERE business_id = $1 AND merged_into IS NULL ORDER BY created_at",
    [businessId],
  );

const eventsOf = async (contactId: string) =>
  (await rows("SELECT 1 FROM crm_events WHERE contact_id = $1", [contactId])).length;

const conflicts = (businessId: string) =>
  rows<{ type: string; value: string; contact_id: string; other_contact: string | null; reason: string }>(
    "SELECT type, value, contact_id, other_contact, reason FROM identity_conflicts WHERE business_id = $1",
    [businessId],
  );

/** The outbox payloads an event caused, by change type. */
async function outboxOf(businessId: string, eventId: string): Promise<Map<string, ContactUpdatedV1>> {
  const found = await rows<{ type: string; payload: ContactUpdatedV1 }>(
    "SELECT type, payload FROM outbox WHERE business_id = $1 AND payload->>'cause_event_id' = $2",
    [businessId, eventId],
  );
  return new Map(found.map((row) => [row.type, row.payload]));
}

// Every payload is checked against the published schema, strictly: a field it does not declare is an error.
const validateChange = topicValidator<ContactUpdatedV1>("contact.updated.v1");

describe("anonymous visitors (anonymous_id)", () => {
  it("anonymous browsing then signup: the anonymous contact becomes the user's, with both identities and all events", async () => {
    const { businessId } = await createBusiness(admin);
    const browsing = [1, 2, 3].map((minute) =>
      rawEvent(businessId, { anonymous_id: "anon-A" }, { type: "page_viewed", occurredAt: at(minute) }),
    );
    const results = [];
    for (const event of browsing) results.push(await apply(event));
    expect(results.map((r) => r.outcome)).toEqual(["created", "unchanged", "unchanged"]);
    expect(new Set(results.map((r) => r.contactId)).size).toBe(1);
    const anonymous = results[0]!.contactId;

    const signup = rawEvent(
      businessId,
      { external_id: "user-U", anonymous_id: "anon-A" },
      { type: "signup", occurredAt: at(4) },
    );
    const identified = await apply(signup);
    expect(identified).toMatchObject({ contactId: anonymous, outcome: "updated", conflicts: 0 });
    expect(await identityGroups(admin, businessId)).toEqual(["anonymous_id:anon-A external_id:user-U"]);
    expect(await liveContacts(businessId)).toHaveLength(1);
    expect(await eventsOf(anonymous)).toBe(4);

    const change = (await outboxOf(businessId, signup.event_id)).get("contact.updated")!;
    expect(validateChange(change).ok).toBe(true);
    expect(change).toMatchObject({
      changed_fields: ["external_id", "identities.external_id"],
      contact: { external_id: "user-U" },
      identities: [{ type: "external_id", value: "user-U" }],
      anonymous_ids: ["anon-A"],
    });
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("signup of a known user: the anonymous contact is merged into the identified one (merged + merged_away)", async () => {
    const { businessId } = await createBusiness(admin);
    const user = await apply(rawEvent(businessId, { external_id: "user-U" }, { occurredAt: at(1) }));
    const anonymous = await apply(rawEvent(businessId, { anonymous_id: "anon-A" }, { occurredAt: at(2) }));
    await apply(rawEvent(businessId, { anonymous_id: "anon-A" }, { occurredAt: at(3) }));
    expect(anonymous.contactId).not.toBe(user.contactId);

    const login = rawEvent(
      businessId,
      { external_id: "user-U", anonymous_id: "anon-A" },
      { occurredAt: at(4) },
    );
    expect(await apply(login)).toMatchObject({ contactId: user.contactId, outcome: "merged", merged: 1 });
    expect(await identityGroups(admin, businessId)).toEqual(["anonymous_id:anon-A external_id:user-U"]);
    expect(await eventsOf(user.contactId)).toBe(4);
    const outbox = await outboxOf(businessId, login.event_id);
    expect(outbox.get("contact.merged")).toMatchObject({
      merged_from: [anonymous.contactId],
      anonymous_ids: ["anon-A"],
    });
    expect(outbox.get("contact.merged_away")).toMatchObject({ merged_into: user.contactId, identities: [] });
    for (const payload of outbox.values()) expect(validateChange(payload).ok).toBe(true);
    // later anonymous events of that device find the user
    expect((await apply(rawEvent(businessId, { anonymous_id: "anon-A" }))).contactId).toBe(user.contactId);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("a second user on the same anonymous_id is not merged with the first: a contact of their own, conflict recorded", async () => {
    const { businessId } = await createBusiness(admin);
    await apply(rawEvent(businessId, { anonymous_id: "shared-device" }, { occurredAt: at(1) }));
    const u = await apply(
      rawEvent(businessId, { external_id: "user-U", anonymous_id: "shared-device" }, { occurredAt: at(2) }),
    );
    const u2Event = rawEvent(
      businessId,
      { external_id: "user-U2", anonymous_id: "shared-device" },
      { occurredAt: at(3) },
    );
    const u2 = await apply(u2Event);
    expect(u2).toMatchObject({ outcome: "created", merged: 0, conflicts: 1 });
    expect(u2.contactId).not.toBe(u.contactId);
    // by email or phone alone, a new person on that device is not joined to the first one either
    const byEmail = await apply(
      rawEvent(
        businessId,
        { email: "third@example.com", anonymous_id: "shared-device" },
        { occurredAt: at(4) },
      ),
    );
    expect(byEmail).toMatchObject({ outcome: "created", conflicts: 1 });
    expect(await identityGroups(admin, businessId)).toEqual([
      "anonymous_id:shared-device external_id:user-U",
      "email:third@example.com",
      "external_id:user-U2",
    ]);
    expect(await conflicts(businessId)).toEqual(
      expect.arrayContaining([
        {
          type: "anonymous_id",
          value: "shared-device",
          contact_id: u2.contactId,
          other_contact: u.contactId,
          reason: "anonymous_id owned by another identified contact; not merged",
        },
      ]),
    );
    // the same events in the other order end the same way: U2 first takes the device, U is refused it
    const { businessId: other } = await createBusiness(admin);
    await apply(rawEvent(other, { external_id: "user-U2", anonymous_id: "shared-device" }));
    const uLater = await apply(rawEvent(other, { external_id: "user-U", anonymous_id: "shared-device" }));
    expect(uLater).toMatchObject({ outcome: "created", conflicts: 1 });
    expect(await liveContacts(other)).toHaveLength(2);
    expect(await invariantViolations(admin, [businessId, other])).toEqual([]);
  });

  it("alias (previous_id) merges the contact of the previous id into the user's, even when both are identified", async () => {
    const { businessId } = await createBusiness(admin);
    // X: known by email and a device; Y: a user id. A plain event joining them through the device is refused...
    const x = await apply(
      rawEvent(businessId, { email: "x@example.com", anonymous_id: "anon-1" }, { occurredAt: at(1) }),
    );
    const y = await apply(rawEvent(businessId, { external_id: "user-Y" }, { occurredAt: at(2) }));
    const refused = await apply(
      rawEvent(businessId, { external_id: "user-Y", anonymous_id: "anon-1" }, { occurredAt: at(3) }),
    );
    expect(refused).toMatchObject({ contactId: y.contactId, merged: 0, conflicts: 1 });
    // ...alias(previousId anon-1, userId user-Y) says they are one person
    const alias = rawEvent(
      businessId,
      { external_id: "user-Y", previous_id: "anon-1" },
      { type: "alias", occurredAt: at(4) },
    );
    expect(await apply(alias)).toMatchObject({ contactId: y.contactId, outcome: "merged", merged: 1 });
    expect(await identityGroups(admin, businessId)).toEqual([
      "anonymous_id:anon-1 email:x@example.com external_id:user-Y",
    ]);
    expect((await outboxOf(businessId, alias.event_id)).get("contact.merged_away")).toMatchObject({
      contact_id: x.contactId,
      merged_into: y.contactId,
    });
    const [event] = await rows<{ contact: Contact }>("SELECT contact FROM crm_events WHERE id = $1", [
      alias.event_id,
    ]);
    expect(event!.contact).toEqual({ external_id: "user-Y", previous_id: "anon-1" });

    // an unknown previous id is kept as an anonymous_id of the user, so the device's later events find them
    await apply(
      rawEvent(businessId, { external_id: "user-Y", previous_id: "anon-2" }, { occurredAt: at(5) }),
    );
    expect((await apply(rawEvent(businessId, { anonymous_id: "anon-2" }))).contactId).toBe(y.contactId);
    // a previous id that is another user id with an external_id of its own: never two external_ids on one contact
    const z = await apply(rawEvent(businessId, { external_id: "user-Z" }, { occurredAt: at(6) }));
    const clash = await apply(
      rawEvent(businessId, { external_id: "user-Y", previous_id: "user-Z" }, { occurredAt: at(7) }),
    );
    expect(clash).toMatchObject({ contactId: y.contactId, merged: 0, conflicts: 1 });
    expect((await liveContacts(businessId)).map((c) => c.id).sort()).toEqual(
      [y.contactId, z.contactId].sort(),
    );
    // a previous id that is the user id of a contact without an external_id joins it
    const w = await apply(rawEvent(businessId, { email: "w@example.com" }, { occurredAt: at(8) }));
    await apply(
      rawEvent(businessId, { email: "w@example.com", anonymous_id: "anon-w" }, { occurredAt: at(9) }),
    );
    const join = await apply(
      rawEvent(businessId, { external_id: "user-Z", previous_id: "anon-w" }, { occurredAt: at(10) }),
    );
    expect(join).toMatchObject({ contactId: z.contactId, outcome: "merged", merged: 1 });
    expect((await rows("SELECT merged_into FROM crm_contacts WHERE id = $1", [w.contactId]))[0]).toEqual({
      merged_into: z.contactId,
    });
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("junk anonymous ids (anonymous, null, ...) are kept on the event and never link", async () => {
    const { businessId } = await createBusiness(admin);
    const a = await apply(rawEvent(businessId, { email: "a@example.com", anonymous_id: "anonymous" }));
    const b = await apply(rawEvent(businessId, { email: "b@example.com", anonymous_id: "Anonymous" }));
    expect(a.contactId).not.toBe(b.contactId);
    expect(await identityGroups(admin, businessId)).toEqual(["email:a@example.com", "email:b@example.com"]);
  });
});

describe("traits", () => {
  it("a late event never overwrites a newer trait; each key keeps its own latest value", async () => {
    const { businessId } = await createBusiness(admin);
    const contact = { anonymous_id: "anon-T" };
    const newer = await apply(
      rawEvent(businessId, { ...contact, traits: { plan: "pro", seats: 10 } }, { occurredAt: at(10) }),
    );
    const late = await apply(
      rawEvent(businessId, { ...contact, traits: { plan: "free", seats: 10 } }, { occurredAt: at(5) }),
    );
    expect(late).toMatchObject({ contactId: newer.contactId, outcome: "unchanged", outboxRows: 0 });
    // a late event still brings the keys nobody set later
    const lateNewKey = rawEvent(
      businessId,
      { ...contact, traits: { plan: "trial", company: "Acme" } },
      { occurredAt: at(6) },
    );
    await apply(lateNewKey);
    const [row] = await liveContacts(businessId);
    expect(row!.traits).toEqual({ plan: "pro", seats: 10, company: "Acme" });
    expect((await outboxOf(businessId, lateNewKey.event_id)).get("contact.updated")!.changed_fields).toEqual([
      "traits.company",
    ]);
    // an equal occurred_at keeps what is there, so the result does not depend on arrival order
    await apply(rawEvent(businessId, { ...contact, traits: { plan: "tie" } }, { occurredAt: at(10) }));
    expect((await liveContacts(businessId))[0]!.traits).toMatchObject({ plan: "pro" });
  });

  it("a merge keeps, key by key, the newer trait of the two contacts", async () => {
    const { businessId } = await createBusiness(admin);
    const user = await apply(
      rawEvent(
        businessId,
        { external_id: "user-M", traits: { plan: "pro", role: "admin" } },
        { occurredAt: at(5) },
      ),
    );
    await apply(
      rawEvent(
        businessId,
        { anonymous_id: "anon-M", traits: { plan: "free", theme: "dark" } },
        { occurredAt: at(1) },
      ),
    );
    await apply(
      rawEvent(businessId, { anonymous_id: "anon-M", traits: { role: "viewer" } }, { occurredAt: at(9) }),
    );
    const login = rawEvent(
      businessId,
      { external_id: "user-M", anonymous_id: "anon-M" },
      { occurredAt: at(10) },
    );
    expect(await apply(login)).toMatchObject({ contactId: user.contactId, outcome: "merged" });
    const [row] = await liveContacts(businessId);
    expect(row!.traits).toEqual({ plan: "pro", role: "viewer", theme: "dark" });
    const merged = (await outboxOf(businessId, login.event_id)).get("contact.merged")!;
    expect(merged.changed_fields).toEqual(expect.arrayContaining(["traits.role", "traits.theme"]));
    expect(merged.changed_fields).not.toContain("traits.plan");
  });

  it("changed traits are named traits.<key> in changed_fields of the outbox payload, which carries contact.traits", async () => {
    const { businessId } = await createBusiness(admin);
    const first = rawEvent(
      businessId,
      { email: "t@example.com", traits: { plan: "pro", seats: 3, nickname: null } },
      { occurredAt: at(1) },
    );
    await apply(first);
    const created = (await outboxOf(businessId, first.event_id)).get("contact.created")!;
    expect(created.changed_fields).toEqual([
      "email",
      "identities.email",
      "traits.nickname",
      "traits.plan",
      "traits.seats",
    ]);
    // a trait whose value is null stays in the message (jsonb_strip_nulls would have dropped it)
    expect(created.contact.traits).toEqual({ plan: "pro", seats: 3, nickname: null });
    expect(validateChange(created).ok).toBe(true);

    const upgrade = rawEvent(
      businessId,
      { email: "t@example.com", traits: { plan: "enterprise", seats: 3 } },
      { occurredAt: at(2) },
    );
    expect(await apply(upgrade)).toMatchObject({ outcome: "updated", outboxRows: 1 });
    const updated = (await outboxOf(businessId, upgrade.event_id)).get("contact.updated")!;
    expect(updated).toMatchObject({
      version: 2,
      changed_fields: ["traits.plan"],
      contact: { email: "t@example.com", traits: { plan: "enterprise", seats: 3, nickname: null } },
    });
    // the same values again, newer: the timestamps move, nothing visible changed, no outbox row
    const same = await apply(
      rawEvent(businessId, { email: "t@example.com", traits: { plan: "enterprise" } }, { occurredAt: at(3) }),
    );
    expect(same).toMatchObject({ outcome: "unchanged", outboxRows: 0 });
    // a contact without traits carries none in its messages
    const plain = rawEvent(businessId, { email: "plain@example.com" });
    await apply(plain);
    expect((await outboxOf(businessId, plain.event_id)).get("contact.created")!.contact).not.toHaveProperty(
      "traits",
    );
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("a contact keeps at most 200 trait keys: keys past the bound are not stored, updates of kept keys still are", async () => {
    const { businessId } = await createBusiness(admin);
    const keys = (from: number, n: number, value: number) =>
      Object.fromEntries(
        Array.from({ length: n }, (_, i) => [`k${String(from + i).padStart(3, "0")}`, value]),
      );
    await apply(
      rawEvent(businessId, { anonymous_id: "anon-B", traits: keys(0, 150, 1) }, { occurredAt: at(1) }),
    );
    await apply(
      rawEvent(businessId, { anonymous_id: "anon-B", traits: keys(100, 150, 2) }, { occurredAt: at(2) }),
    );
    const [row] = await liveContacts(businessId);
    expect(Object.keys(row!.traits)).toHaveLength(200);
    expect(row!.traits).toMatchObject({ k000: 1, k100: 2, k199: 2 });
    expect(row!.traits).not.toHaveProperty("k200");
  });
});

describe("a random identity graph with anonymous ids", () => {
  /**
   * People with an external_id (every other one), an email, a phone and two devices each; events carry random
   * subsets, including anonymous-only ones, applied in parallel and in chunks, in shuffled order with shuffled
   * occurred_at. Devices are never shared, so the expected end state is known whatever the order: the identified
   * identifiers group as "appear in one event" (anonymous ids never join identified contacts), and every device
   * sits with one group of its own person (or alone, if it never appeared with an identified identifier).
   */
  it("ends in the same state as the graph says, under concurrency, with every event on a live contact", async () => {
    const { businessId } = await createBusiness(admin);
    const persons = 25;
    const events: RawEventV1[] = [];
    const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!;
    for (let person = 0; person < persons; person++) {
      const devices = [`dev-${person}-a`, `dev-${person}-b`];
      for (let j = 0; j < 10; j++) {
        const contact: Contact = {};
        if (Math.random() < 0.6) contact.anonymous_id = pick(devices);
        if (person % 2 === 0 && Math.random() < 0.3) contact.external_id = `acct_${person}`;
        if (Math.random() < 0.4) contact.email = `p${person}@graph.test`;
        if (Math.random() < 0.3) contact.phone = `+1555${String(person).padStart(7, "0")}`;
        if (Math.random() < 0.1) contact.previous_id = pick(devices);
        if (Object.keys(contact).length === 0) contact.anonymous_id = pick(devices);
        if (Math.random() < 0.3) contact.traits = { [`t${j % 3}`]: j };
        events.push(rawEvent(businessId, contact));
      }
    }
    const base = Date.now() - 3_600_000;
    const shuffled = events
      .map((event) => ({ event, order: Math.random() }))
      .sort((a, b) => a.order - b.order)
      .map(({ event }, i) => ({
        ...event,
        occurred_at: new Date(base + Math.random() * 1e6 + i).toISOString(),
      }))
      .map(decode);

    const applyRetrying = async (event: RawEventV1) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await resolveContact(service, event);
        } catch (error) {
          if (!isTransientDbError(error) || attempt >= 5) throw error;
        }
      }
    };
    // half one by one, eight at a time; half in chunks of ten, as the worker's runners do
    const single = shuffled.slice(0, shuffled.length / 2);
    const chunks = Array.from({ length: Math.ceil(shuffled.length / 20) }, (_, i) =>
      shuffled.slice(shuffled.length / 2 + i * 10, shuffled.length / 2 + i * 10 + 10),
    ).filter((chunk) => chunk.length > 0);
    await Promise.all([
      ...Array.from({ length: 8 }, async () => {
        for (let event = single.shift(); event; event = single.shift()) await applyRetrying(event);
      }),
      ...Array.from({ length: 3 }, async () => {
        for (let chunk = chunks.shift(); chunk; chunk = chunks.shift()) {
          try {
            await resolveContacts(service, chunk);
          } catch {
            for (const event of chunk) await applyRetrying(event);
          }
        }
      }),
    ]);

    // identified groups: union-find over the identified identifiers of each event (alias joins its previous id)
    const personOf = (id: string) => Number(/(\d+)/.exec(id.replace("+1555", ""))![1]);
    const actual = await rows<{ contact_id: string; ids: string[] }>(
      `SELECT contact_id, array_agg(type || ':' || value ORDER BY type, value) AS ids
       FROM contact_identities WHERE business_id = $1 GROUP BY contact_id`,
      [businessId],
    );
    for (const { ids } of actual) {
      // nobody's identifiers end with another person's
      expect(new Set(ids.map((id) => personOf(id.split(":")[1]!))).size).toBe(1);
    }
    // every identified identifier and device that appeared is owned exactly once
    const seen = new Set(
      shuffled.flatMap((event) =>
        (["external_id", "email", "phone", "anonymous_id", "previous_id"] as const).flatMap((type) => {
          const value = event.contact[type];
          return value ? [`${type === "previous_id" ? "anonymous_id" : type}:${value}`] : [];
        }),
      ),
    );
    const owned = actual.flatMap((row) => row.ids);
    expect(owned.length).toBe(new Set(owned).size);
    expect(new Set(owned)).toEqual(seen);
    // a person's identified identifiers that shared an event share a contact
    for (const event of shuffled) {
      const identified = (["external_id", "email", "phone"] as const).flatMap((type) =>
        event.contact[type] ? [`${type}:${event.contact[type]}`] : [],
      );
      const owners = new Set(actual.filter((row) => identified.some((id) => row.ids.includes(id))));
      expect(owners.size).toBeLessThanOrEqual(1);
    }
    expect((await rows("SELECT 1 FROM crm_events WHERE business_id = $1", [businessId])).length).toBe(
      events.length,
    );
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });
});

// The same story end to end: raw events keyed as ingest-api keys them (`business:anon:<id>` for an anonymous-only
// event) through a real worker process, the outbox and the real Debezium connector to contact.updated.v1.
describe("through the worker and Debezium", () => {
  const producer = new RawEventProducer(env.brokers);
  let topics: WorkerTopics;
  let worker: RunningService | undefined;
  let changes: TopicProbe;

  beforeAll(async () => {
    topics = await createWorkerTopics(env.brokers, 4);
    await producer.connect();
    changes = await new TopicProbe(env.brokers, TOPICS.contactUpdated).start({ fromEnd: true });
    worker = await startWorker(topics, { DATABASE_POOL_SIZE: "3" });
  });

  afterAll(async () => {
    await worker?.stop();
    await Promise.all([producer.close(), changes?.stop()]);
    if (topics) await dropWorkerTopics(env.brokers, topics);
  });

  /** Sends events and waits until the worker applied them (each step depends on the one before). */
  async function step(events: RawEventV1[]): Promise<void> {
    await producer.send(topics.topic, events);
    await poll(
      `${events.length} event(s) applied`,
      async () => {
        const found = await rows("SELECT 1 FROM crm_events WHERE id = ANY ($1::uuid[])", [
          events.map((e) => e.event_id),
        ]);
        return found.length === events.length ? true : undefined;
      },
      { timeoutMs: 30_000 },
    );
  }

  it("browsing, signup with traits, a second user on the device, a known user's login: contact.updated.v1 tells it", async () => {
    const { businessId } = await createBusiness(admin);
    const browse = [1, 2].map((m) => rawEvent(businessId, { anonymous_id: "dev-1" }, { occurredAt: at(m) }));
    expect(partitionKey(businessId, decode(browse[0]!).contact, browse[0]!.event_id)).toBe(
      `${businessId}:anon:dev-1`,
    );
    await step(browse);
    const signup = rawEvent(
      businessId,
      { external_id: "user-U", anonymous_id: "dev-1", traits: { plan: "pro" } },
      { type: "signup", occurredAt: at(3) },
    );
    await step([signup]);
    const secondUser = rawEvent(
      businessId,
      { external_id: "user-U2", anonymous_id: "dev-1" },
      { occurredAt: at(4) },
    );
    await step([secondUser]);
    await step([rawEvent(businessId, { external_id: "user-V" }, { occurredAt: at(5) })]);
    await step([rawEvent(businessId, { anonymous_id: "dev-2" }, { occurredAt: at(6) })]);
    const login = rawEvent(
      businessId,
      { external_id: "user-V", anonymous_id: "dev-2" },
      { occurredAt: at(7) },
    );
    await step([login]);

    // created (dev-1), updated (signup), created (U2), created (V), created (dev-2), merged + merged_away (login)
    const messages = await changes.waitFor((m) => m.headers.business_id === businessId, 7);
    const values = messages.map((m) => m.value as ContactUpdatedV1);
    for (const value of values) expect(validateChange(value).ok).toBe(true);
    const caused = (event: RawEventV1) => values.filter((v) => v.cause_event_id === event.event_id);
    expect(caused(signup)).toEqual([
      expect.objectContaining({
        change: "updated",
        changed_fields: ["external_id", "identities.external_id", "traits.plan"],
        contact: expect.objectContaining({ external_id: "user-U", traits: { plan: "pro" } }),
        anonymous_ids: ["dev-1"],
      }),
    ]);
    expect(caused(secondUser)).toEqual([
      expect.objectContaining({ change: "created", identities: [{ type: "external_id", value: "user-U2" }] }),
    ]);
    expect(caused(secondUser)[0]).not.toHaveProperty("anonymous_ids");
    expect(
      caused(login)
        .map((v) => v.change)
        .sort(),
    ).toEqual(["merged", "merged_away"]);
    expect(caused(login).find((v) => v.change === "merged")).toMatchObject({
      contact: { external_id: "user-V" },
      anonymous_ids: ["dev-2"],
    });
    expect((await conflicts(businessId)).map((c) => c.type)).toEqual(["anonymous_id"]);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });
});
