import { randomUUID } from "node:crypto";
import { createKafka, encodeFramedJson, ensureTopics } from "@crm/kafka";
import { poll, sleep } from "@crm/process";
import type { ContactUpdatedV1 } from "@crm/schemas";
import { testEnv } from "@crm/testing";
import { afterAll, describe, expect, it } from "vitest";
import { ContactConsumer } from "./consumer.ts";

// The kit against a topic of its own on the real broker, fed with messages shaped like Debezium's.
describe("ContactConsumer", () => {
  const env = testEnv();
  const kafka = createKafka({ brokers: env.brokers, clientId: "contact-consumer-test" });
  const topic = `test.contact.kit.${randomUUID().slice(0, 8)}`;
  const groupId = `contact-kit-${randomUUID().slice(0, 8)}`;

  afterAll(async () => {
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.deleteGroups([groupId]).catch(() => {});
    await admin.disconnect();
  });

  const businessId = randomUUID();
  const contactId = randomUUID();
  const change = (version: number): ContactUpdatedV1 => ({
    contact_id: contactId,
    business_id: businessId,
    version,
    change: version === 1 ? "created" : "updated",
    changed_fields: version === 1 ? ["email"] : ["name"],
    contact: { email: "kit@example.com", name: `v${version}`, first_seen_at: "2026-11-26T10:00:00+00:00" },
    identities: [{ type: "email", value: "kit@example.com" }],
    cause_event_id: randomUUID(),
    occurred_at: "2026-11-26T10:00:00.123+00:00",
  });
  const message = (id: string, value: unknown, framed = false) => ({
    key: contactId,
    value: framed ? encodeFramedJson(7, value) : JSON.stringify(value),
    headers: { id, type: "contact.updated", business_id: businessId },
  });

  it("validates, drops duplicates, hands changes over in order, retries a failed callback, commits after it", async () => {
    const ids = Array.from({ length: 6 }, () => randomUUID());
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic, numPartitions: 2 }]);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic,
      messages: [
        message(ids[0]!, change(1)),
        message(ids[1]!, change(2)),
        message(ids[1]!, change(2)), // replayed by Debezium after a crash: same outbox id
        message(ids[2]!, change(3)),
        message(randomUUID(), { ...change(4), version: "four" }), // does not match the schema
        message(ids[3]!, { ...change(4), region: "eu" }), // a field from a newer schema version
        message(ids[4]!, change(5), true), // schema-registry framing
        message(ids[5]!, change(6)),
      ],
    });
    await producer.disconnect();

    const delivered: { id: string; version: number; region?: unknown }[] = [];
    const attempts = new Map<string, number>();
    const invalid: string[][] = [];
    const consumer = new ContactConsumer({
      kafka,
      groupId,
      topic,
      onInvalid: (m) => void invalid.push(m.errors),
      onChange: (c) => {
        attempts.set(c.id, (attempts.get(c.id) ?? 0) + 1);
        if (c.id === ids[2] && attempts.get(c.id) === 1) throw new Error("downstream store unavailable");
        delivered.push({
          id: c.id,
          version: c.value.version,
          region: (c.value as { region?: unknown }).region,
        });
      },
    });
    await consumer.start();
    try {
      await poll("every change delivered", async () => (delivered.length >= 6 ? true : undefined), {
        timeoutMs: 60_000,
      });
      expect(delivered.map((d) => d.id)).toEqual(ids);
      expect(delivered.map((d) => d.version)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(delivered[3]!.region).toBeUndefined();
      expect(attempts.get(ids[2]!)).toBe(2);
      expect(consumer.stats).toMatchObject({ delivered: 6, duplicates: 1, invalid: 1 });
      expect(invalid[0]!.join(" ")).toMatch(/version/);

      const ends = await admin.fetchTopicOffsets(topic);
      await poll(
        "offsets committed up to the end",
        async () => {
          const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
          const all = ends.every(
            (end) =>
              end.offset === "0" ||
              committed!.partitions.find((p) => p.partition === end.partition)?.offset === end.offset,
          );
          return all ? true : undefined;
        },
        { timeoutMs: 30_000 },
      );
    } finally {
      await consumer.stop();
      await admin.disconnect();
    }

    // The same group starts after its commits: nothing is handed over again.
    const again: string[] = [];
    const second = new ContactConsumer({ kafka, groupId, topic, onChange: (c) => void again.push(c.id) });
    await second.start();
    await sleep(3_000);
    await second.stop();
    expect(again).toEqual([]);
  });
});
