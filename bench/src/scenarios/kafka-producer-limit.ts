import { randomUUID } from "node:crypto";
import { poll } from "@crm/process";
import type { BenchRun, Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { runProducerPerf } from "../limits.ts";
import { fmt } from "../report.ts";

/** Limit: Kafka's ProducerPerformance flat out, with the API's mean record size, on a throwaway topic. */
export const kafkaProducerLimit: Scenario = {
  name: "limit: Kafka producer",
  selectedBy: [6],
  async run(bench) {
    const { cfg, kafka } = bench;
    bench.recordSize ??= await measureRecordSize(bench).catch(() => undefined);
    // The mean value size the API produced in this run; without API traffic in the run, a typical one.
    const size = bench.recordSize ?? 400;
    const partitions = Number(bench.env.KAFKA_PARTITIONS ?? 12);
    say(
      `limits: Kafka producer perf test (${size} B records${bench.recordSize ? "" : ", assumed: no API traffic in this run"}, acks=all, ${partitions} partitions)`,
    );
    const topic = `bench-limit-${bench.runId}`.toLowerCase();
    await kafka.createTopic(topic, partitions);
    const producer = await bench.phases
      .run("6 kafka", [], () =>
        runProducerPerf({
          brokers: kafka.brokers.join(","),
          topic,
          recordSize: size,
          warmupS: cfg.warmupS,
          durationS: cfg.durationS,
          onSpawn: bench.phases.onLoadSpawn,
        }),
      )
      .finally(() => kafka.deleteTopic(topic).catch(() => {}));
    say(`  ${fmt(producer.recordsPerSec)} records/s`);
    bench.limits.kafkaProducer = producer;
  },
};

/** Mean size of the values the API produced for the main business (the record size of the Kafka limit). */
async function measureRecordSize(bench: BenchRun): Promise<number | undefined> {
  const { kafka } = bench;
  const businessId = bench.tenants.main.businessId;
  const ends = await kafka.admin.fetchTopicOffsets(kafka.raw);
  const consumer = kafka.kafka.consumer({
    groupId: kafka.ownGroup(`bench-size-${randomUUID().slice(0, 8)}`),
    maxWaitTimeInMs: 50,
  });
  const sizes: number[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic: kafka.raw });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ message }) => {
      if (message.key?.toString().startsWith(businessId) && message.value) sizes.push(message.value.length);
    },
  });
  for (const { partition, offset } of ends) {
    consumer.seek({ topic: kafka.raw, partition, offset: String(Math.max(0, Number(offset) - 2_000)) });
  }
  await poll("200 record sizes", () => sizes.length >= 200, { timeoutMs: 10_000, throwOnTimeout: false });
  await consumer.disconnect();
  return sizes.length ? Math.round(sizes.reduce((a, b) => a + b, 0) / sizes.length) : undefined;
}
