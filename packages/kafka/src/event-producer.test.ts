import type { Kafka, ProducerBatch } from "kafkajs";
import { describe, expect, it } from "vitest";
import { KafkaEventProducer } from "./index.ts";

/**
 * The coalescing of KafkaEventProducer alone: kafkajs's producer is replaced by one that records each request
 * and acknowledges it after `ackMs` (the broker path itself is covered by the integration tests).
 */
function recordingKafka(ackMs: number) {
  const requests: string[][] = [];
  const kafka = {
    producer: () => ({
      connect: async () => {},
      disconnect: async () => {},
      sendBatch: async (batch: ProducerBatch) => {
        requests.push(
          (batch.topicMessages ?? []).flatMap((topic) => topic.messages.map((m) => String(m.value))),
        );
        await new Promise((resolve) => setTimeout(resolve, ackMs));
      },
    }),
  } as unknown as Kafka;
  return { kafka, requests };
}

const message = (value: string) => ({ key: value, value });

describe("KafkaEventProducer coalescing", () => {
  it("without a linger, the first send goes at once and the ones queued behind it go together", async () => {
    const { kafka, requests } = recordingKafka(20);
    const producer = new KafkaEventProducer(kafka);
    await Promise.all(["a", "b", "c"].map((v) => producer.send("t", [message(v)])));
    expect(requests).toEqual([["a"], ["b", "c"]]);
  });

  it("with a linger, a send that finds the producer idle waits for others to share its request", async () => {
    const { kafka, requests } = recordingKafka(1);
    const producer = new KafkaEventProducer(kafka, { lingerMs: 30 });
    const first = producer.send("t", [message("a")]);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await Promise.all([first, producer.send("t", [message("b")]), producer.send("u", [message("c")])]);
    expect(requests).toEqual([["a", "b", "c"]]);
  });

  it("does not wait out the linger once a request's worth of messages is queued", async () => {
    const { kafka, requests } = recordingKafka(1);
    const producer = new KafkaEventProducer(kafka, { lingerMs: 60_000, maxBatchMessages: 3 });
    const started = performance.now();
    await Promise.all(["a", "b", "c"].map((v) => producer.send("t", [message(v)])));
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(requests).toEqual([["a", "b", "c"]]);
  });
});
