import { poll } from "@crm/process";
import { createBusiness } from "@crm/testing";
import { describe, expect, it } from "vitest";
import {
  addContact,
  addEndpoint,
  addTrigger,
  contactChange,
  startAutomations,
  useAutomationsFixture,
} from "./test-harness.ts";

// SIGKILL of the delivery service in the middle of a load: after a restart every message is delivered at least
// once, and the receiver never sees two different webhook-ids for one logical message (trigger x contact change).
describe("automations: crash mid-load", () => {
  const fixture = useAutomationsFixture({ partitions: 6, adminPoolSize: 8 });
  const { admin, service, receiver } = fixture;

  it("every due message is delivered after a restart, each under one webhook-id", async () => {
    // a slow-ish receiver, so attempts are in flight when the process dies
    receiver.behaviour = () => ({ status: 200 });
    const businesses = await Promise.all([
      createBusiness(admin),
      createBusiness(admin),
      createBusiness(admin),
    ]);
    const contactOf = new Map<string, string>();
    const messages = [];
    for (const { businessId } of businesses) {
      const endpoint = await addEndpoint(service, businessId, { url: receiver.url });
      receiver.secrets.push(endpoint.secret);
      await addTrigger(service, businessId, { name: "created", on: { kind: "contact.created" } });
      for (let i = 0; i < 150; i++) {
        const contact = await addContact(admin, businessId);
        contactOf.set(contact.id, businessId);
        messages.push(contactChange(businessId, contact).message);
      }
    }
    fixture.automations = await startAutomations(fixture.topics, {
      AUTOMATIONS_TIMEOUT_MS: "2000",
      AUTOMATIONS_ENDPOINT_CONCURRENCY: "4",
    });
    for (let i = 0; i < messages.length; i += 50) {
      await fixture.producer.send({ topic: fixture.topics.contact, messages: messages.slice(i, i + 50) });
    }
    await poll(
      "some webhooks before the kill",
      async () => (receiver.received.length >= 60 ? true : undefined),
      {
        timeoutMs: 60_000,
      },
    );
    fixture.automations.signal("SIGKILL");
    await poll("the process gone", async () => (fixture.automations!.running ? undefined : true), {
      timeoutMs: 10_000,
    });
    const before = receiver.received.length;
    await fixture.automations.start(90_000);

    await poll(
      "every contact's webhook",
      async () =>
        new Set(receiver.received.map((r) => JSON.parse(r.body).data.contact_id)).size >= 450
          ? true
          : undefined,
      { timeoutMs: 90_000 },
    );
    expect(before).toBeLessThan(450);
    const idsByContact = new Map<string, Set<string>>();
    for (const r of receiver.received) {
      expect(r.verified).toBe(true);
      const contactId = JSON.parse(r.body).data.contact_id as string;
      idsByContact.set(contactId, (idsByContact.get(contactId) ?? new Set()).add(r.id));
    }
    expect(idsByContact.size).toBe(450);
    expect([...idsByContact.values()].filter((ids) => ids.size !== 1)).toEqual([]);
    const ids = businesses.map((b) => b.businessId);
    await poll(
      "every delivery recorded as succeeded",
      async () => {
        const { rows } = await admin.query(
          "SELECT count(*)::int AS ok FROM automation_deliveries WHERE business_id = ANY($1) AND status = 'succeeded'",
          [ids],
        );
        return rows[0].ok === 450 ? true : undefined;
      },
      { timeoutMs: 30_000 },
    );
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM automation_deliveries WHERE business_id = ANY($1)",
      [ids],
    );
    expect(rows[0].n).toBe(450);
  });
});
