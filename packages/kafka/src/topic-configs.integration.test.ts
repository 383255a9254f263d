import { randomUUID } from "node:crypto";
import { stackEnv } from "@crm/config";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  alignTopicConfigs,
  createKafka,
  DEFAULT_EVENT_RETENTION_MS,
  ensureTopics,
  pipelineTopics,
  TOPICS,
} from "./index.ts";

// Retention of the topics holding raw events (issue 18): set on creation and on every `stack up` for topics that
// exist, without losing a topic's other settings.
describe("topic retention", () => {
  const admin = createKafka({
    brokers: stackEnv().KAFKA_BROKERS!.split(","),
    clientId: "topic-configs-test",
  }).admin();
  const topic = `events.raw.v1.test-retention-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    await admin.connect();
  });
  afterAll(async () => {
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  });

  const topicConfig = async () => {
    const { resources } = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2, name: topic }],
    });
    return Object.fromEntries(
      resources[0]!.configEntries
        .filter((e) => e.configSource === 1)
        .map((e) => [e.configName, e.configValue]),
    );
  };

  it("pipelineTopics gives raw, DLQ and applied topics the retention; alignTopicConfigs changes an existing topic, keeping its other settings", async () => {
    const specs = pipelineTopics(3, 1, 3_600_000);
    const retained = specs.filter((s) => s.configEntries).map((s) => s.topic);
    expect(retained.sort()).toEqual([TOPICS.dlq, TOPICS.eventsApplied, TOPICS.raw].sort());
    expect(pipelineTopics(3)[0]!.configEntries).toEqual([
      { name: "retention.ms", value: String(DEFAULT_EVENT_RETENTION_MS) },
    ]);

    await ensureTopics(admin, [
      { topic, numPartitions: 1, configEntries: [{ name: "max.message.bytes", value: "2000000" }] },
    ]);
    const spec = { topic, numPartitions: 1, configEntries: [{ name: "retention.ms", value: "3600000" }] };
    expect(await alignTopicConfigs(admin, [spec])).toEqual([topic]);
    expect(await topicConfig()).toMatchObject({ "retention.ms": "3600000", "max.message.bytes": "2000000" });
    expect(await alignTopicConfigs(admin, [spec])).toEqual([]);
  });
});
