import { randomUUID } from "node:crypto";
import { createKafka, ensureTopics } from "@crm/kafka";
import { createLogger } from "@crm/logger";
import { eventually, testEnv } from "@crm/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TriggerConsumer } from "./consumer.ts";
import { createSegmentsMetrics } from "./metrics.ts";
import type { ContactTrigger } from "./reevaluate.ts";

/**
 * The consumer on the real broker, with the re-evaluation replaced: batches are handed over without waiting for
 * their round, so what a failed round took must come back by seeking its partitions, and offsets must be committed
 * only past what succeeded.
 */
describe("segments trigger consumer", () => {
  const { brokers } = testEnv();
  const kafka = createKafka({ brokers, clientId: "segments-consumer-test" });
  const admin = kafka.admin();
  const suffix = randomUUID().slice(0, 8);
  const topics = { contacts: `segments-test-contacts-${suffix}`, events: `segments-test-events-${suffix}` };
  const groupId = `segments-test-${suffix}`;

  beforeAll(async () => {
    await admin.connect();
    await ensureTopics(admin, [
      { topic: topics.contacts, numPartitions: 3 },
      { topic: topics.events, numPartitions: 3 },
    ]);
  });

  afterAll(async () => {
    await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
    await admin.disconnect();
  });

  it("a failed round's triggers are read again and evaluated; offsets end at the topics' ends", async () => {
    const business = randomUUID();
    const contacts = Array.from({ length: 40 }, () => randomUUID());
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: topics.events,
      messages: contacts.map((contact) => ({
        key: contact,
        value: "{}",
        headers: { business_id: business, type: "purchase", id: randomUUID() },
      })),
    });
    await producer.disconnect();

    const evaluated = new Set<string>();
    let calls = 0;
    let failures = 0;
    const consumer = new TriggerConsumer({
      kafka,
      logger: createLogger("segments-consumer-test", { level: "silent" }),
      metrics: createSegmentsMetrics(),
      groupId,
      topics,
      chunk: 7,
      partitionConcurrency: 6,
      maxPending: 1_000,
      lingerMs: 5,
      evaluationConcurrency: 2,
      sessionTimeoutMs: 10_000,
      reevaluate: async (businessId: string, triggers: ContactTrigger[]) => {
        expect(businessId).toBe(business);
        calls++;
        // The first two transactions fail, as if Postgres went away.
        if (calls <= 2) {
          failures++;
          throw new Error("postgres went away");
        }
        for (const trigger of triggers) evaluated.add(trigger.contactId);
      },
    });
    await consumer.start();
    try {
      await eventually("every contact evaluated", async () =>
        contacts.every((c) => evaluated.has(c)) ? true : undefined,
      );
      expect(failures).toBe(2);
      const ends = await admin.fetchTopicOffsets(topics.events);
      await eventually("offsets committed at the end of every partition", async () => {
        const [committed] = await admin.fetchOffsets({ groupId, topics: [topics.events] });
        return ends.every(
          (end) => committed!.partitions.find((p) => p.partition === end.partition)?.offset === end.high,
        )
          ? true
          : undefined;
      });
    } finally {
      await consumer.stop();
    }
  }, 60_000);
});
