import { poll } from "@crm/process";
import { createBusiness } from "@crm/testing";
import { beforeAll, describe, expect, it } from "vitest";
import {
  addContact,
  addEndpoint,
  addTrigger,
  contactChange,
  startAutomations,
  useAutomationsFixture,
} from "./test-harness.ts";

// With AUTOMATIONS_ALLOW_PRIVATE_TARGETS off (production), no webhook reaches loopback, private or link-local
// addresses, whether named by an IP literal (v4, v6, IPv4-mapped v6) or by a DNS name resolving to one.
describe("automations: private targets refused", () => {
  const fixture = useAutomationsFixture({ partitions: 1, adminPoolSize: 4 });
  const { admin, service, receiver } = fixture;

  beforeAll(async () => {
    fixture.automations = await startAutomations(fixture.topics, { AUTOMATIONS_ALLOW_PRIVATE_TARGETS: "0" });
  }, 120_000);

  it("refuses loopback, mapped, private, link-local and names resolving to loopback; nothing reaches the receiver", async () => {
    const { businessId } = await createBusiness(admin);
    const port = receiver.port;
    const urls = [
      `http://127.0.0.1:${port}/hook`,
      `http://localhost:${port}/hook`,
      `http://[::1]:${port}/hook`,
      `http://[::ffff:127.0.0.1]:${port}/hook`,
      `http://[::ffff:7f00:1]:${port}/hook`,
      `http://0.0.0.0:${port}/hook`,
      "http://169.254.169.254/latest/meta-data/",
      "http://10.0.0.1/hook",
      "http://192.168.1.1/hook",
      "http://[fe80::1]/hook",
      "http://[fd00::1]/hook",
      `http://2130706433:${port}/hook`,
    ];
    const endpoints: string[] = [];
    for (const url of urls) endpoints.push((await addEndpoint(service, businessId, { url })).id);
    await addTrigger(service, businessId, { name: "created", on: { kind: "contact.created" } });
    const contact = await addContact(admin, businessId);
    await fixture.producer.send({
      topic: fixture.topics.contact,
      messages: [contactChange(businessId, contact).message],
    });
    const attempts = await poll(
      "a first attempt per endpoint",
      async () => {
        const { rows } = await admin.query(
          `SELECT d.endpoint_id, a.outcome, a.error FROM automation_attempts a
           JOIN automation_deliveries d ON d.id = a.delivery_id WHERE d.business_id = $1 AND a.attempt = 1`,
          [businessId],
        );
        return rows.length === urls.length ? rows : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(
      attempts
        .map((a) => [urls[endpoints.indexOf(a.endpoint_id)], a.outcome])
        .filter(([, o]) => o !== "refused"),
    ).toEqual([]);
    expect(receiver.received).toEqual([]);
  });
});
