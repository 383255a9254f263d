import { randomUUID } from "node:crypto";
import { replayDelivery, rotateEndpointSecret } from "@crm/automations";
import { createPool, transaction } from "@crm/db";
import { poll } from "@crm/process";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  addContact,
  addEndpoint,
  addTrigger,
  adminProducer,
  contactChange,
  createInputTopics,
  dropInputTopics,
  type InputTopics,
  SECRET_KEY,
  startAutomations,
  WebhookReceiver,
} from "./test-harness.ts";

// The automations service on the real stack: inputs written to private topics, webhooks delivered to loopback
// receivers that verify every request with the real standardwebhooks and svix libraries.
describe("automations: triggers to signed webhooks", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
  const service = createPool({
    connectionString: env.databaseUrl,
    applicationName: "automations-test",
    max: 4,
  });
  let topics: InputTopics;
  let automations: Awaited<ReturnType<typeof startAutomations>>;
  let producer: Awaited<ReturnType<typeof adminProducer>>;
  const receivers: WebhookReceiver[] = [];

  const receiver = async () => {
    const r = await new WebhookReceiver().start();
    receivers.push(r);
    return r;
  };
  /** A business with one endpoint (to `r`) and one trigger on contact creation. */
  const scenario = async (
    r: WebhookReceiver,
    trigger: object = { name: "new contact", on: { kind: "contact.created" } },
  ) => {
    const { businessId } = await createBusiness(admin);
    const endpoint = await addEndpoint(service, businessId, { url: r.url });
    r.secrets.push(endpoint.secret);
    const triggerId = await addTrigger(service, businessId, trigger as never);
    return { businessId, endpoint, triggerId };
  };
  const deliveriesOf = async (endpointId: string) =>
    (
      await admin.query(
        `SELECT d.id, d.status, d.attempts, d.message_id, d.last_status_code FROM automation_deliveries d
         WHERE d.endpoint_id = $1 ORDER BY d.created_at`,
        [endpointId],
      )
    ).rows;
  const attemptsOf = async (deliveryId: string) =>
    (
      await admin.query(
        "SELECT attempt, outcome, status_code, started_at, next_attempt_at, error FROM automation_attempts WHERE delivery_id = $1 ORDER BY attempt",
        [deliveryId],
      )
    ).rows;

  beforeAll(async () => {
    topics = await createInputTopics(env.brokers);
    producer = await adminProducer(env.brokers);
    // few slots in all, so an endpoint that took more than its own share would starve the others
    automations = await startAutomations(topics, {
      AUTOMATIONS_MAX_IN_FLIGHT: "24",
      AUTOMATIONS_ENDPOINT_CONCURRENCY: "8",
    });
  }, 120_000);

  afterAll(async () => {
    await automations?.stop();
    await producer?.disconnect();
    for (const r of receivers) await r.stop();
    if (topics) await dropInputTopics(env.brokers, topics);
    await service.end();
    await admin.end();
  });

  it("a created contact fires its trigger: one signed webhook, verified by standardwebhooks and svix, with the contact", async () => {
    const r = await receiver();
    const { businessId, triggerId } = await scenario(r);
    const contact = await addContact(admin, businessId);
    const { message } = contactChange(businessId, contact);
    await producer.send({ topic: topics.contact, messages: [message] });
    // the same Kafka message again (a redelivery): still one logical message
    await producer.send({ topic: topics.contact, messages: [message] });

    const [got] = await poll("the webhook", async () => (r.received.length > 0 ? r.received : undefined), {
      timeoutMs: 30_000,
    });
    expect(got!.verified).toBe(true);
    const payload = JSON.parse(got!.body);
    expect(payload).toMatchObject({
      type: "contact.created",
      data: {
        business_id: businessId,
        contact_id: contact.id,
        trigger: { id: triggerId },
        contact: { email: contact.email },
      },
    });
    // nothing else arrives for the redelivered input
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM automation_messages WHERE trigger_id = $1",
      [triggerId],
    );
    expect(rows[0].n).toBe(1);
    expect(new Set(r.received.map((x) => x.id)).size).toBe(1);
  });

  it("during a secret rotation both signatures are sent: a receiver holding only the old or only the new secret verifies", async () => {
    const r = await receiver();
    const { businessId, endpoint } = await scenario(r);
    const rotated = await transaction(
      service,
      "test.rotate",
      (client) => rotateEndpointSecret(client, SECRET_KEY(), businessId, endpoint.id, 3600),
      { businessId },
    );
    r.secrets = [];
    const contact = await addContact(admin, businessId);
    await producer.send({ topic: topics.contact, messages: [contactChange(businessId, contact).message] });
    const [got] = await poll("the webhook", async () => (r.received.length > 0 ? r.received : undefined), {
      timeoutMs: 30_000,
    });
    const signatures = got!.signature.split(" ");
    expect(signatures).toHaveLength(2);
    const headers = {
      "webhook-id": got!.id,
      "webhook-timestamp": got!.timestamp,
      "webhook-signature": got!.signature,
    };
    r.secrets = [endpoint.secret];
    expect(r.verify(got!.body, headers)).toBe(true);
    r.secrets = [rotated.secret];
    expect(r.verify(got!.body, headers)).toBe(true);
    r.secrets = [`whsec_${Buffer.alloc(24, 7).toString("base64")}`];
    expect(r.verify(got!.body, headers)).toBe(false);
  });

  it("receiver down, then 500s, then 200: delivered once, each attempt logged on the (shrunk) schedule", async () => {
    const r = await receiver();
    await r.stop(); // down: connection refused
    const { businessId, endpoint } = await scenario(r);
    const contact = await addContact(admin, businessId);
    await producer.send({ topic: topics.contact, messages: [contactChange(businessId, contact).message] });
    const [delivery] = await poll(
      "two failed attempts while down",
      async () => {
        const rows = await deliveriesOf(endpoint.id);
        return rows[0]?.attempts >= 2 ? rows : undefined;
      },
      { timeoutMs: 30_000 },
    );
    r.behaviour = (n) => (n <= 1 ? { status: 500 } : { status: 200 });
    await r.start(r.port);
    await poll(
      "delivered",
      async () => ((await deliveriesOf(endpoint.id))[0]?.status === "succeeded" ? true : undefined),
      {
        timeoutMs: 30_000,
      },
    );
    const attempts = await attemptsOf(delivery!.id);
    const outcomes = attempts.map((a) => a.outcome);
    expect(outcomes.slice(0, 2)).toEqual(["failed", "failed"]);
    expect(outcomes.at(-1)).toBe("succeeded");
    expect(outcomes.at(-2)).toBe("failed");
    expect(attempts.at(-2)!.status_code).toBe(500);
    expect(attempts.map((a) => a.attempt)).toEqual(attempts.map((_, i) => i + 1));
    // schedule 200, 400, 800 ms (+-10 %): each gap at least the scheduled delay, less the jitter
    const schedule = [200, 400, 800, 1600];
    for (let i = 1; i < attempts.length; i++) {
      const gap = attempts[i]!.started_at.getTime() - attempts[i - 1]!.started_at.getTime();
      expect(gap).toBeGreaterThanOrEqual(schedule[i - 1]! * 0.9 - 50);
    }
    expect(r.received).toHaveLength(1);
    expect(r.received[0]!.verified).toBe(true);
    expect(r.received[0]!.id).toBe(delivery!.message_id);
  });

  it("a 410 disables the endpoint; Retry-After pushes the next attempt", async () => {
    const gone = await receiver();
    gone.behaviour = () => ({ status: 410 });
    const a = await scenario(gone);
    const slow = await receiver();
    slow.behaviour = (n) => (n === 1 ? { status: 429, headers: { "retry-after": "3" } } : { status: 200 });
    const b = await scenario(slow);
    const [ca, cb] = [await addContact(admin, a.businessId), await addContact(admin, b.businessId)];
    await producer.send({
      topic: topics.contact,
      messages: [contactChange(a.businessId, ca).message, contactChange(b.businessId, cb).message],
    });
    await poll(
      "the 410 endpoint disabled",
      async () => {
        const { rows } = await admin.query(
          "SELECT enabled, disabled_reason FROM automation_endpoints WHERE id = $1",
          [a.endpoint.id],
        );
        return rows[0].enabled === false ? rows[0] : undefined;
      },
      { timeoutMs: 30_000 },
    ).then((row) => expect(row.disabled_reason).toBe("gone"));
    await poll("delivered after Retry-After", async () => (slow.received.length > 0 ? true : undefined), {
      timeoutMs: 30_000,
    });
    const [d] = await poll(
      "the success recorded",
      async () => {
        const rows = await deliveriesOf(b.endpoint.id);
        return rows[0]?.status === "succeeded" ? rows : undefined;
      },
      { timeoutMs: 30_000 },
    );
    const attempts = await attemptsOf(d!.id);
    expect(attempts.map((x) => x.status_code)).toEqual([429, 200]);
    expect(attempts[1]!.started_at.getTime() - attempts[0]!.started_at.getTime()).toBeGreaterThanOrEqual(
      2_900,
    );
  });

  it("a delivery that exhausts the schedule fails; a replay delivers it with the same webhook-id", async () => {
    const r = await receiver();
    r.behaviour = () => ({ status: 503 });
    const { businessId, endpoint } = await scenario(r);
    const contact = await addContact(admin, businessId);
    await producer.send({ topic: topics.contact, messages: [contactChange(businessId, contact).message] });
    const [failed] = await poll(
      "the delivery failed after 1 + 4 attempts",
      async () => {
        const rows = await deliveriesOf(endpoint.id);
        return rows[0]?.status === "failed" ? rows : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(failed!.attempts).toBe(5);
    expect((await attemptsOf(failed!.id)).map((a) => a.status_code)).toEqual([503, 503, 503, 503, 503]);
    r.behaviour = "ok";
    await transaction(service, "test.replay", (client) => replayDelivery(client, businessId, failed!.id), {
      businessId,
    });
    await poll("the replay", async () => (r.received.length > 0 ? true : undefined), { timeoutMs: 30_000 });
    expect(r.received[0]).toMatchObject({ id: failed!.message_id, verified: true });
    await poll(
      "recorded",
      async () => ((await deliveriesOf(endpoint.id))[0]?.status === "succeeded" ? true : undefined),
      {
        timeoutMs: 30_000,
      },
    );
  });

  it("an endpoint failing for longer than the limit (5 days) is disabled and reported", async () => {
    const r = await receiver();
    r.behaviour = () => ({ status: 500 });
    const { businessId, endpoint } = await scenario(r);
    // as if it had been failing since six days ago
    await admin.query(
      "UPDATE automation_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1",
      [endpoint.id],
    );
    const contact = await addContact(admin, businessId);
    await producer.send({ topic: topics.contact, messages: [contactChange(businessId, contact).message] });
    const row = await poll(
      "disabled",
      async () => {
        const { rows } = await admin.query(
          "SELECT enabled, disabled_reason FROM automation_endpoints WHERE id = $1",
          [endpoint.id],
        );
        return rows[0].enabled ? undefined : rows[0];
      },
      { timeoutMs: 30_000 },
    );
    expect(row.disabled_reason).toBe("failing");
    expect(automations.output()).toContain("endpoint failing for too long: disabled");
  });

  it("erasing a contact removes its messages, deliveries and attempts (foreign keys cascade)", async () => {
    const r = await receiver();
    const { businessId, triggerId } = await scenario(r);
    const contact = await addContact(admin, businessId);
    await producer.send({ topic: topics.contact, messages: [contactChange(businessId, contact).message] });
    await poll("delivered", async () => (r.received.length > 0 ? true : undefined), { timeoutMs: 30_000 });
    const count = async () =>
      (
        await admin.query(
          `SELECT (SELECT count(*) FROM automation_messages WHERE contact_id = $1)::int
                + (SELECT count(*) FROM automation_deliveries d JOIN automation_messages m ON m.id = d.message_id
                   WHERE m.contact_id = $1)::int AS n`,
          [contact.id],
        )
      ).rows[0].n;
    expect(await count()).toBe(2);
    await poll(
      "the attempt recorded",
      async () =>
        (
          await admin.query(
            "SELECT 1 FROM automation_attempts a JOIN automation_deliveries d ON d.id = a.delivery_id JOIN automation_messages m ON m.id = d.message_id WHERE m.trigger_id = $1",
            [triggerId],
          )
        ).rowCount
          ? true
          : undefined,
      { timeoutMs: 30_000 },
    );
    await admin.query("DELETE FROM crm_contacts WHERE id = $1", [contact.id]);
    expect(await count()).toBe(0);
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM automation_attempts a JOIN automation_deliveries d ON d.id = a.delivery_id WHERE d.business_id = $1",
      [businessId],
    );
    expect(rows[0].n).toBe(0);
  });

  it("options: a change to a value, once per contact, and a delay", async () => {
    const r = await receiver();
    const { businessId } = await createBusiness(admin);
    const endpoint = await addEndpoint(service, businessId, { url: r.url });
    r.secrets.push(endpoint.secret);
    const once = await addTrigger(service, businessId, {
      name: "became pro",
      on: { kind: "contact.changed", field: "traits.plan", to: "pro" },
      once_per_contact: true,
    });
    const later = await addTrigger(service, businessId, {
      name: "two seconds after",
      on: { kind: "contact.created" },
      delay_seconds: 2,
    });
    const contact = await addContact(admin, businessId);
    const change = (version: number, plan: string, change: "created" | "updated" = "updated") =>
      contactChange(businessId, contact, {
        change,
        version,
        changedFields: ["traits.plan"],
        traits: { plan },
      }).message;
    const sentAt = Date.now();
    await producer.send({
      topic: topics.contact,
      messages: [change(1, "free", "created"), change(2, "pro"), change(3, "free"), change(4, "pro")],
    });
    await poll("two webhooks", async () => (r.received.length >= 2 ? true : undefined), {
      timeoutMs: 30_000,
    });
    const bodies = r.received.map((x) => ({ ...JSON.parse(x.body), at: x.at }));
    const pro = bodies.filter((b) => b.data.trigger.id === once);
    expect(pro.map((b) => b.data.cause.version)).toEqual([2]);
    const delayed = bodies.find((b) => b.data.trigger.id === later);
    expect(delayed.at - sentAt).toBeGreaterThanOrEqual(2_000);
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM automation_messages WHERE trigger_id = $1",
      [once],
    );
    expect(rows[0].n).toBe(1);
  });

  it("an endpoint deleted while its attempt is in flight: that outcome is dropped, the others are recorded", async () => {
    const slow = await receiver();
    slow.behaviour = () => ({ status: 200, delayMs: 1_500 });
    const a = await scenario(slow);
    const fine = await receiver();
    fine.behaviour = () => ({ status: 200, delayMs: 1_500 });
    const b = await scenario(fine);
    const [ca, cb] = [await addContact(admin, a.businessId), await addContact(admin, b.businessId)];
    const before = automations.output().length;
    await producer.send({
      topic: topics.contact,
      messages: [contactChange(a.businessId, ca).message, contactChange(b.businessId, cb).message],
    });
    await poll(
      "both in flight",
      async () => (slow.arrived.length > 0 && fine.arrived.length > 0 ? true : undefined),
      {
        timeoutMs: 30_000,
      },
    );
    await admin.query("DELETE FROM automation_endpoints WHERE id = $1", [a.endpoint.id]);
    await poll(
      "the other recorded as succeeded",
      async () => ((await deliveriesOf(b.endpoint.id))[0]?.status === "succeeded" ? true : undefined),
      { timeoutMs: 30_000 },
    );
    expect(automations.output().slice(before)).not.toContain("recording attempts failed");
    expect(fine.arrived).toHaveLength(1);
  });

  it("a blackholed endpoint (accepts, never answers) does not slow another endpoint's deliveries", async () => {
    const hole = await receiver();
    hole.behaviour = "blackhole";
    const fine = await receiver();
    const { businessId } = await createBusiness(admin);
    const holeEndpoint = await addEndpoint(service, businessId, { url: hole.url });
    const fineEndpoint = await addEndpoint(service, businessId, { url: fine.url });
    fine.secrets.push(fineEndpoint.secret);
    await addTrigger(service, businessId, { name: "all", on: { kind: "contact.created" } });
    const contacts = await Promise.all(Array.from({ length: 60 }, () => addContact(admin, businessId)));
    const sentAt = Date.now();
    await producer.send({
      topic: topics.contact,
      messages: contacts.map((c) => contactChange(businessId, c).message),
    });
    await poll(
      "every delivery to the good endpoint",
      async () => (fine.received.length >= 60 ? true : undefined),
      {
        timeoutMs: 60_000,
      },
    );
    // the blackhole holds its 8 slots for the 15 s timeout; the other endpoint never waited for them
    expect(Date.now() - sentAt).toBeLessThan(15_000);
    expect(fine.received.every((x) => x.verified)).toBe(true);
    const holeDeliveries = await deliveriesOf(holeEndpoint.id);
    expect(holeDeliveries.every((d) => d.status === "pending")).toBe(true);
  });

  it("segment and event triggers: entered a segment, and a purchase over 500 (where filter), with a contact filter", async () => {
    const r = await receiver();
    const { businessId } = await createBusiness(admin);
    const endpoint = await addEndpoint(service, businessId, { url: r.url });
    r.secrets.push(endpoint.secret);
    const { rows } = await admin.query(
      `INSERT INTO segment_definitions (business_id, name, definition) VALUES ($1, 'at risk', '{"no_event":{"type":"login","last_days":14}}') RETURNING id`,
      [businessId],
    );
    const segmentId = rows[0].id;
    const entered = await addTrigger(service, businessId, {
      name: "at risk",
      on: { kind: "segment.entered", segment_id: segmentId },
    });
    const purchase = await addTrigger(service, businessId, {
      name: "big purchase",
      on: { kind: "event", type: "purchase", where: [{ property: "amount", op: ">", value: 500 }] },
      contact_filter: { contact: { field: "email", op: "contains", value: "@vip." } },
    });
    const vip = await addContact(admin, businessId, `${randomUUID()}@vip.example`);
    const other = await addContact(admin, businessId);
    const at = new Date().toISOString();
    const membership = (contactId: string, change: string) => ({
      key: contactId,
      value: JSON.stringify({
        business_id: businessId,
        segment_id: segmentId,
        segment_version: 1,
        contact_id: contactId,
        change,
        at,
        cause: "rule",
      }),
    });
    await producer.send({
      topic: topics.membership,
      messages: [
        membership(vip.id, "entered"),
        membership(vip.id, "entered"),
        membership(other.id, "exited"),
      ],
    });
    const event = (contactId: string, amount: number) => ({
      key: contactId,
      value: JSON.stringify({ amount, sku: "x" }),
      headers: { id: randomUUID(), type: "purchase", business_id: businessId, occurred_at: at },
    });
    await producer.send({
      topic: topics.events,
      messages: [event(vip.id, 900), event(vip.id, 20), event(other.id, 900)],
    });
    await poll("two webhooks", async () => (r.received.length >= 2 ? true : undefined), {
      timeoutMs: 30_000,
    });
    // and no third: wait until the inputs after them were consumed
    const marker = await addContact(admin, businessId, `${randomUUID()}@vip.example`);
    await producer.send({ topic: topics.events, messages: [event(marker.id, 501)] });
    await poll("the marker", async () => (r.received.length >= 3 ? true : undefined), { timeoutMs: 30_000 });
    const bodies = r.received.map((x) => JSON.parse(x.body));
    expect(bodies.filter((b) => b.data.trigger.id === entered)).toHaveLength(1);
    expect(bodies.find((b) => b.data.trigger.id === entered)).toMatchObject({
      type: "segment.entered",
      data: { contact_id: vip.id, cause: { segment_id: segmentId, change: "entered" } },
    });
    const purchases = bodies.filter((b) => b.data.trigger.id === purchase);
    expect(purchases.map((b) => [b.data.contact_id, b.data.cause.props.amount])).toEqual([
      [vip.id, 900],
      [marker.id, 501],
    ]);
    expect(r.received.every((x) => x.verified)).toBe(true);
  });

  it("hostile input on every topic is counted and skipped; the consumer keeps going", async () => {
    const r = await receiver();
    const { businessId } = await scenario(r);
    const junk = [
      { key: "x", value: "not json" },
      { key: null, value: null },
      { key: "x", value: JSON.stringify({ contact_id: "nope" }), headers: { id: "1" } },
      {
        key: randomUUID(),
        value: "[1,2]",
        headers: { id: randomUUID(), type: "t", business_id: businessId, occurred_at: "x" },
      },
      {
        key: randomUUID(),
        value: JSON.stringify({ a: "\u0000" }),
        headers: {
          id: randomUUID(),
          type: "t",
          business_id: businessId,
          occurred_at: new Date().toISOString(),
        },
      },
      { key: "x", value: Buffer.from([0, 0, 0, 0, 1, 0xff]) },
    ];
    // a well-formed change whose contact does not exist, and one whose name Postgres cannot store (NUL)
    const ghost = contactChange(businessId, { id: randomUUID(), email: "g@example.com" }).message;
    const nul = contactChange(businessId, { id: randomUUID(), email: "n\u0000@example.com" }).message;
    await producer.send({ topic: topics.contact, messages: [...junk, ghost, nul] });
    await producer.send({ topic: topics.membership, messages: junk });
    await producer.send({ topic: topics.events, messages: junk });
    const contact = await addContact(admin, businessId);
    await producer.send({ topic: topics.contact, messages: [contactChange(businessId, contact).message] });
    await poll("the valid change after the junk", async () => (r.received.length > 0 ? true : undefined), {
      timeoutMs: 30_000,
    });
    const metrics = await (await fetch(`http://127.0.0.1:${automations.port}/metrics`)).text();
    const invalid = (topic: string) =>
      Number(
        new RegExp(
          `automations_inputs_total\\{topic="${topic.replaceAll(".", "\\.")}",outcome="invalid"\\} (\\d+)`,
        ).exec(metrics)?.[1] ?? 0,
      );
    expect(invalid(topics.contact)).toBeGreaterThanOrEqual(6);
    expect(invalid(topics.membership)).toBeGreaterThanOrEqual(6);
    expect(invalid(topics.events)).toBeGreaterThanOrEqual(6);
    expect(metrics).toMatch(/automations_inputs_total\{topic="[^"]+",outcome="unknown_contact"\} \d+/);
    expect(metrics).toContain("automations_attempts_total");
    expect(metrics).toContain("automations_queue_age_seconds");
    expect(metrics).toContain("automations_disabled_endpoints");
  });
});
