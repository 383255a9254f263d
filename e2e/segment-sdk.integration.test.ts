import { randomUUID } from "node:crypto";
import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import RudderAnalytics from "@rudderstack/rudder-sdk-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPipelineProcesses } from "./pipeline-processes.ts";
import {
  createIngestKey,
  eventCount,
  liveContacts,
  segmentClient,
  startFailingProxy,
} from "./segment-fixtures.ts";

// Issue 15: producers adopt the pipeline unchanged. The real @segment/analytics-node 3.x and
// @rudderstack/rudder-sdk-node, with only their host changed, send to the Segment-compatible listener of a real
// ingest-api process, in front of a real resolver-worker, Postgres, Debezium and contact.updated.v1.
describe("Segment and RudderStack SDKs", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 3 });
  let api: RunningService;
  let worker: RunningService;
  let updates: TopicProbe;
  let segmentUrl: string;

  beforeAll(async () => {
    updates = await new TopicProbe(env.brokers, TOPICS.contactUpdated).start();
    ({ api, worker, segmentUrl } = await startPipelineProcesses({
      brokers: env.brokers,
      groupPrefix: "segment-e2e",
      apiEnv: { INGEST_INSTANCE_GROUP: `segment-e2e-${randomUUID()}` },
    }));
    await poll("the Segment listener", async () => (await fetch(`${segmentUrl}/healthz`)).ok || undefined, {
      timeoutMs: 10_000,
    });
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop(), updates?.stop()]);
    await admin.end();
  });

  async function business() {
    const { businessId } = await createBusiness(admin);
    return { businessId, writeKey: await createIngestKey(admin, businessId) };
  }

  const applied = (businessId: string, count: number) =>
    poll(
      `${count} events of ${businessId} applied`,
      async () => ((await eventCount(admin, businessId)) >= count ? true : undefined),
      { timeoutMs: 60_000 },
    );

  it("analytics-node: page + identify + track + alias end as one contact with its identities, traits and contact.updated.v1", async () => {
    const { businessId, writeKey } = await business();
    const { analytics, statuses, failures } = segmentClient(segmentUrl, writeKey);
    analytics.page({ anonymousId: "anon-1", name: "Pricing", properties: { path: "/pricing" } });
    analytics.identify({
      userId: "user-1",
      anonymousId: "anon-1",
      traits: { email: "Alice@Example.com", firstName: "Alice", lastName: "Liddell", plan: "pro" },
    });
    analytics.track({ userId: "user-1", event: "Order Completed", properties: { total: 42 } });
    analytics.alias({ userId: "user-1", previousId: "old-device" });
    await analytics.closeAndFlush();
    expect(failures).toEqual([]);
    expect(statuses.every((s) => s === 200)).toBe(true);

    await applied(businessId, 4);
    const contacts = await liveContacts(admin, businessId);
    expect(contacts).toHaveLength(1);
    const [contact] = contacts;
    expect(contact).toMatchObject({
      external_id: "user-1",
      email: "alice@example.com",
      name: "Alice Liddell",
      traits: { email: "Alice@Example.com", firstName: "Alice", lastName: "Liddell", plan: "pro" },
    });
    expect(contact!.identities).toEqual([
      "anonymous_id:anon-1",
      "anonymous_id:old-device",
      "email:alice@example.com",
      "external_id:user-1",
    ]);
    const { rows: events } = await admin.query(
      "SELECT type, props, contact_id FROM crm_events WHERE business_id = $1 ORDER BY type",
      [businessId],
    );
    expect(events.map((e) => e.type)).toEqual(["Order Completed", "alias", "identify", "page_viewed"]);
    expect(events.every((e) => e.contact_id === contact!.id)).toBe(true);
    expect(events.find((e) => e.type === "page_viewed")!.props).toMatchObject({
      path: "/pricing",
      name: "Pricing",
      segment_context: { library: { name: "@segment/analytics-node" } },
    });

    // contact.updated.v1 ends with the contact as it is: traits, the anonymous ids, the external id and email.
    const messages = await updates.waitFor(
      (m) =>
        m.headers.business_id === businessId &&
        (m.value as { contact_id: string; version: number }).contact_id === contact!.id &&
        (m.value as { version: number }).version === Number(contact!.version),
      1,
      60_000,
    );
    expect(messages[0]!.value).toMatchObject({
      contact: { external_id: "user-1", email: "alice@example.com", traits: { plan: "pro" } },
      anonymous_ids: expect.arrayContaining(["anon-1", "old-device"]),
    });
    const all = updates.forBusiness(businessId).map((m) => m.value as { changed_fields: string[] });
    expect(all.flatMap((m) => m.changed_fields)).toContain("traits.plan");
  });

  it("rudder-sdk-node with gzip: identify + track + page + alias end the same", async () => {
    const { businessId, writeKey } = await business();
    const proxy = await startFailingProxy(segmentUrl);
    const client = new RudderAnalytics(writeKey, { dataPlaneUrl: proxy.url, flushAt: 20, logLevel: "error" });
    try {
      client.page({ anonymousId: "r-anon", name: "Home", properties: { path: "/" } });
      client.identify({
        userId: "r-user",
        anonymousId: "r-anon",
        traits: { email: "bob@example.com", name: "Bob", plan: "team" },
      });
      client.track({ userId: "r-user", event: "Invited Teammate", properties: { seats: 3 } });
      client.alias({ userId: "r-user", previousId: "r-old" });
      await client.flush();
    } finally {
      await proxy.close();
    }
    expect(proxy.requests.length).toBeGreaterThanOrEqual(1);
    expect(proxy.requests.every((h) => h["content-encoding"] === "gzip")).toBe(true);
    expect(proxy.requests[0]!.authorization).toMatch(/^Basic /);

    await applied(businessId, 4);
    const [contact, ...others] = await liveContacts(admin, businessId);
    expect(others).toEqual([]);
    expect(contact).toMatchObject({
      external_id: "r-user",
      email: "bob@example.com",
      name: "Bob",
      traits: { plan: "team" },
    });
    expect(contact!.identities).toEqual([
      "anonymous_id:r-anon",
      "anonymous_id:r-old",
      "email:bob@example.com",
      "external_id:r-user",
    ]);
    await updates.waitFor(
      (m) =>
        m.headers.business_id === businessId &&
        (m.value as { version: number }).version === Number(contact!.version),
      1,
      60_000,
    );
  });

  it("analytics-node behind a listener answering 503 to its first tries: every message applied exactly once", async () => {
    const { businessId, writeKey } = await business();
    // 1st try refused; 2nd applied by the listener but answered 503 (a lost answer); 3rd passes (replays).
    const proxy = await startFailingProxy(segmentUrl, { refuse: 1, forwardButFail: 1 });
    const { analytics, statuses, failures } = segmentClient(proxy.url, writeKey, { flushAt: 10 });
    try {
      for (let i = 0; i < 10; i++)
        analytics.track({ userId: `u-${i % 3}`, event: "Retried", properties: { i } });
      await analytics.closeAndFlush();
    } finally {
      await proxy.close();
    }
    expect(failures).toEqual([]);
    expect(statuses).toEqual([503, 503, 200]);
    await applied(businessId, 10);
    // nothing more arrives: each messageId was applied once
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const { rows } = await admin.query(
      "SELECT props->>'i' AS i, count(*)::int AS n FROM crm_events WHERE business_id = $1 GROUP BY 1 ORDER BY 1",
      [businessId],
    );
    expect(rows).toEqual(
      Array.from({ length: 10 }, (_, i) => ({ i: String(i), n: 1 })).sort((a, b) => a.i.localeCompare(b.i)),
    );
  });

  it("anonymous browsing then signup: one contact with both identities and all events; U2 on the same device is not merged", async () => {
    const { businessId, writeKey } = await business();
    const at = (s: number) => new Date(Date.now() - 60_000 + s * 1_000);
    const first = segmentClient(segmentUrl, writeKey);
    first.analytics.page({ anonymousId: "device-A", name: "Landing", timestamp: at(1) });
    first.analytics.track({ anonymousId: "device-A", event: "Viewed Plan", timestamp: at(2) });
    await first.analytics.closeAndFlush();
    await applied(businessId, 2);
    expect(await liveContacts(admin, businessId)).toHaveLength(1);

    const signup = segmentClient(segmentUrl, writeKey);
    signup.analytics.identify({
      userId: "U",
      anonymousId: "device-A",
      traits: { plan: "free" },
      timestamp: at(3),
    });
    await signup.analytics.closeAndFlush();
    await applied(businessId, 3);
    const [u] = await liveContacts(admin, businessId);
    expect(u!.identities).toEqual(["anonymous_id:device-A", "external_id:U"]);
    const { rows } = await admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM crm_events WHERE business_id = $1 AND contact_id = $2",
      [businessId, u!.id],
    );
    expect(rows[0]!.n).toBe(3);

    // A second person signs up on the same device: never merged with U, the conflict is recorded.
    const second = segmentClient(segmentUrl, writeKey);
    second.analytics.identify({ userId: "U2", anonymousId: "device-A", timestamp: at(4) });
    await second.analytics.closeAndFlush();
    await applied(businessId, 4);
    const contacts = await liveContacts(admin, businessId);
    expect(contacts.map((c) => c.external_id).sort()).toEqual(["U", "U2"]);
    expect(contacts.find((c) => c.external_id === "U")!.identities).toContain("anonymous_id:device-A");
    const conflicts = await admin.query(
      "SELECT count(*)::int AS n FROM identity_conflicts WHERE business_id = $1",
      [businessId],
    );
    expect(conflicts.rows[0].n).toBeGreaterThanOrEqual(1);
  });

  it("a late identify does not overwrite a newer trait; traits over the limit are a rejected message while the batch answers 200", async () => {
    const { businessId, writeKey } = await business();
    const now = Date.now();
    const { analytics, statuses, failures } = segmentClient(segmentUrl, writeKey);
    analytics.identify({ userId: "T", traits: { plan: "pro", seats: 5 }, timestamp: new Date(now - 1_000) });
    await analytics.closeAndFlush();
    await applied(businessId, 1);
    const late = segmentClient(segmentUrl, writeKey);
    late.analytics.identify({
      userId: "T",
      traits: { plan: "free", city: "Paris" },
      timestamp: new Date(now - 60_000),
    });
    const tooMany = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, i]));
    late.analytics.identify({ userId: "T", traits: tooMany, messageId: "too-many-traits" });
    late.analytics.track({ userId: "T", event: "Still Counted" });
    await late.analytics.closeAndFlush();
    expect([...statuses, ...late.statuses].every((s) => s === 200)).toBe(true);
    expect([...failures, ...late.failures]).toEqual([]);
    await applied(businessId, 3);

    const [contact] = await liveContacts(admin, businessId);
    expect(contact!.traits).toEqual({ plan: "pro", seats: 5, city: "Paris" });

    const { rows } = await admin.query(
      "SELECT message_id, reason_code, reason, message FROM rejected_events WHERE business_id = $1",
      [businessId],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ message_id: "too-many-traits", reason_code: "invalid_traits" });
    expect(rows[0].reason).toContain("traits: traits must have at most 200 keys");
    expect(JSON.parse(rows[0].message)).toMatchObject({ type: "identify", userId: "T" });

    // Counted per business, on /metrics and through the CLI.
    const metrics = await (await fetch(`${api.url}/metrics`)).text();
    expect(metrics).toContain(
      `ingest_rejected_messages_total{business_id="${businessId}",reason="invalid_traits"} 1`,
    );
    const { runRejectedEvents } = await import("../services/ingest-api/src/rejected-events-cli.ts");
    const printed: string[] = [];
    expect(await runRejectedEvents(["counts", businessId], admin, (line) => printed.push(line))).toBe(0);
    expect(JSON.parse(printed[0]!)).toMatchObject({
      business_id: businessId,
      reason_code: "invalid_traits",
      rejected: 1,
    });
  });

  it("cross-tenant matrix: a write key of business A never writes to B, whichever field names B", async () => {
    const a = await business();
    const b = await business();
    const post = async (body: unknown, headers: Record<string, string>) =>
      (
        await fetch(`${segmentUrl}/v1/batch`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        })
      ).status;
    const basic = (key: string) => ({ authorization: `Basic ${Buffer.from(`${key}:`).toString("base64")}` });
    const message = (i: number, extra: Record<string, unknown>) => ({
      type: "track",
      event: "cross",
      userId: `x-${i}`,
      messageId: `cross-${i}`,
      ...extra,
    });
    const cases: [Record<string, unknown>, Record<string, string>, Record<string, unknown>][] = [
      [message(0, { business_id: b.businessId }), basic(a.writeKey), {}],
      [message(1, { properties: { business_id: b.businessId } }), basic(a.writeKey), {}],
      [message(2, { context: { business_id: b.businessId, groupId: b.businessId } }), basic(a.writeKey), {}],
      // the header's key wins over the body's
      [message(3, {}), basic(a.writeKey), { writeKey: b.writeKey }],
      [message(4, { writeKey: b.writeKey }), basic(a.writeKey), {}],
      [message(5, { business_id: a.businessId }), basic(a.writeKey), { business_id: b.businessId }],
    ];
    for (const [m, headers, envelope] of cases)
      expect(await post({ batch: [m], ...envelope }, headers)).toBe(200);
    // the same messageId under B's key is B's own message
    expect(await post({ batch: [message(3, {})] }, basic(b.writeKey))).toBe(200);

    await applied(a.businessId, 5);
    await applied(b.businessId, 1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await eventCount(admin, a.businessId)).toBe(5);
    expect(await eventCount(admin, b.businessId)).toBe(1);
    const rejected = await admin.query(
      "SELECT business_id, reason_code FROM rejected_events WHERE business_id = ANY($1)",
      [[a.businessId, b.businessId]],
    );
    expect(rejected.rows).toEqual([{ business_id: a.businessId, reason_code: "forbidden_business" }]);
    const inB = await admin.query("SELECT count(*)::int AS n FROM crm_contacts WHERE business_id = $1", [
      b.businessId,
    ]);
    expect(inB.rows[0].n).toBe(1);
  });
});
