import { createRequire } from "node:module";
import type * as KafkaJs from "kafkajs";

/*
 * Preloaded into the bench's own ingest-api only (NODE_OPTIONS=--import, see bench-topics.ts): each kafkajs
 * producer of the process sends to BENCH_TOPIC_MAP's topic in place of the one it names, so the bench's events
 * land on the bench's own topic and never on the shared events.raw.v1 the dev worker consumes. ingest-api has no
 * setting for its topic (the worker has WORKER_TOPIC); once it has one, the bench sets it and this file goes.
 * It loads before tsx, so Node strips the types itself: erasable syntax only.
 */
const { Kafka } = createRequire(import.meta.url)("kafkajs") as typeof KafkaJs;
const renames = JSON.parse(process.env.BENCH_TOPIC_MAP ?? "{}") as Record<string, string>;
const topicFor = (topic: string) => renames[topic] ?? topic;

const createProducer = Kafka.prototype.producer;
Kafka.prototype.producer = function producer(this: KafkaJs.Kafka, config?: KafkaJs.ProducerConfig) {
  const created = createProducer.call(this, config);
  const { send, sendBatch } = created;
  created.send = (record) => send({ ...record, topic: topicFor(record.topic) });
  created.sendBatch = (batch) =>
    sendBatch({
      ...batch,
      topicMessages: batch.topicMessages?.map((messages) => ({
        ...messages,
        topic: topicFor(messages.topic),
      })),
    });
  return created;
};
process.stderr.write(`[bench] this process's producers send ${JSON.stringify(renames)}\n`);
