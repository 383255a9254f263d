import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, type RunningService, signUserToken, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPipelineProcesses } from "./pipeline-processes.ts";

// One event all the way through the real processes: ingest-api (HTTP) -> events.raw.v1 -> resolver-worker ->
// Postgres (contact, identity, event, outbox) -> Debezium -> contact.updated.v1.
describe("walking skeleton", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let api: RunningService;
  let worker: RunningService;
  let updates: TopicProbe;
  let raw: TopicProbe;

  beforeAll(async () => {
    updates = await new TopicProbe(env.brokers, TOPICS.contactUpdated).start();
    raw = await new TopicProbe(env.brokers, TOPICS.raw).start();
    ({ api, worker } = await startPipelineProcesses({ brokers: env.brokers, groupPrefix: "e2e" }));
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop(), updates?.stop(), raw?.stop()]);
    await admin.end();
  });

  async function track(token: string, body: unknown) {
    const res = await fetch(`${api.url}/v1/track`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it("turns one signed request into a contact, an event, an outbox row and one contact.updated.v1 message", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);

    const res = await track(token, {
      type: "signup",
      business_id: businessId,
      contact: { email: " Alice@Example.COM ", name: "Alice" },
      props: { plan: "pro" },
    });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ ok: true, event_id: expect.any(String) });
    const eventId = res.body.event_id as string;

    const event = await poll(
      "the event row",
      async () => {
        const { rows } = await admin.query("SELECT * FROM crm_events WHERE id = $1", [eventId]);
        return rows[0];
      },
      { timeoutMs: 30_000 },
    );
    expect(event).toMatchObject({ business_id: businessId, type: "signup", props: { plan: "pro" } });

    const count = async (sql: string) => Number((await admin.query(sql, [businessId])).rows[0].count);
    expect(await count("SELECT count(*) FROM crm_contacts WHERE business_id = $1")).toBe(1);
    expect(await count("SELECT count(*) FROM contact_identities WHERE business_id = $1")).toBe(1);
    expect(await count("SELECT count(*) FROM crm_events WHERE business_id = $1")).toBe(1);
    expect(await count("SELECT count(*) FROM outbox WHERE business_id = $1")).toBe(1);

    const identity = (
      await admin.query("SELECT * FROM contact_identities WHERE business_id = $1", [businessId])
    ).rows[0];
    expect(identity).toMatchObject({
      type: "email",
      value: "alice@example.com",
      contact_id: event.contact_id,
    });
    const outbox = (await admin.query("SELECT * FROM outbox WHERE business_id = $1", [businessId])).rows[0];

    const [message] = await updates.waitFor((m) => m.headers.business_id === businessId, 1, 60_000);
    expect(message!.key).toBe(event.contact_id);
    expect(message!.headers.id).toBe(outbox.id);
    expect(message!.headers.type).toBe("contact.created");
    expect(message!.value).toMatchObject({
      contact_id: event.contact_id,
      business_id: businessId,
      version: 1,
      change: "created",
      cause_event_id: eventId,
      contact: { email: "alice@example.com", name: "Alice" },
      identities: [{ type: "email", value: "alice@example.com" }],
    });
  });

  it("seed regression 1: a user of business A sending for business B gets 403 and nothing reaches Kafka", async () => {
    const a = await createBusiness(admin);
    const b = await createBusiness(admin);
    const tokenA = await signUserToken(env.jwtSecret, a.ownerId);
    const tokenB = await signUserToken(env.jwtSecret, b.ownerId);
    const contact = { email: "victim@example.com" };

    const viaProps = await track(tokenA, { type: "test", props: { business_id: b.businessId }, contact });
    const viaBody = await track(tokenA, { type: "test", business_id: b.businessId, contact });
    for (const res of [viaProps, viaBody]) {
      expect(res.status).toBe(403);
      expect(res.body).toEqual({
        ok: false,
        error: { code: "forbidden_business", message: expect.any(String) },
      });
    }

    // B's own owner then sends with the same contact: same key, same partition, so a forbidden event that had
    // been enqueued would sit before this one. Seeing exactly this one proves none was.
    const allowed = await track(tokenB, { type: "test", business_id: b.businessId, contact });
    expect(allowed.status).toBe(202);
    await raw.waitFor((m) => (m.value as { event_id?: string }).event_id === allowed.body.event_id);
    const forB = raw.messages.filter(
      (m) => (m.value as { business_id?: string }).business_id === b.businessId,
    );
    expect(forB.map((m) => (m.value as { event_id: string }).event_id)).toEqual([allowed.body.event_id]);
    expect(api.output()).toContain("crm_track_unauthorized_business");
  });
});
