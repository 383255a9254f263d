import { type Admin, createKafka, type Kafka, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { consumerGroupAtTopicEnd } from "@crm/testing";

/**
 * What the bench makes on the shared Kafka, and removes again: its own raw and dead-letter topics (named like the
 * worker tests' private ones, `events.raw.v1.bench-<run>`, with events.raw.v1's partitions and replication), the
 * consumer groups it creates, and any throwaway topic. The dev worker's group, the shared events.raw.v1 and
 * events.dlq.v1 never see a bench event. contact.updated.v1 is the exception: Debezium routes every outbox row
 * there, so the bench's contact updates appear on it as any producer's would.
 */
export class BenchTopics {
  readonly raw: string;
  readonly dlq: string;
  private readonly topics = new Set<string>();
  private readonly groups = new Set<string>();

  private constructor(
    readonly kafka: Kafka,
    readonly admin: Admin,
    readonly brokers: string[],
    runId: string,
  ) {
    const suffix = `bench-${runId}`.toLowerCase();
    this.raw = `${TOPICS.raw}.${suffix}`;
    this.dlq = `${TOPICS.dlq}.${suffix}`;
  }

  /** Connects and creates the run's raw and dead-letter topics. */
  static async create(brokers: string[], runId: string): Promise<BenchTopics> {
    const kafka = createKafka({ brokers, clientId: "bench" });
    const admin = kafka.admin();
    await admin.connect();
    const topics = new BenchTopics(kafka, admin, brokers, runId);
    // As events.raw.v1 is, so partitioning and replication cost what they cost on the shared topic.
    const [shared] = (await admin.fetchTopicMetadata({ topics: [TOPICS.raw] })).topics;
    const partitions = shared?.partitions.length ?? 12;
    const replicationFactor = shared?.partitions[0]?.replicas.length ?? 1;
    await topics.createTopic(topics.raw, partitions, replicationFactor);
    await topics.createTopic(topics.dlq, partitions, replicationFactor);
    return topics;
  }

  async createTopic(topic: string, numPartitions: number, replicationFactor = 1): Promise<void> {
    this.topics.add(topic);
    try {
      await this.admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions, replicationFactor }],
      });
    } catch (error) {
      // On a busy broker kafkajs's wait for leaders can meet a partition not hosted yet, which it does not retry:
      // the topic exists, so wait for its leaders here.
      if ((error as { type?: string }).type !== "UNKNOWN_TOPIC_OR_PARTITION") throw error;
      await poll(
        `leaders of ${topic}`,
        async () => {
          const metadata = await this.admin.fetchTopicMetadata({ topics: [topic] }).catch(() => undefined);
          const partitions = metadata?.topics[0]?.partitions ?? [];
          return partitions.length === numPartitions && partitions.every((p) => p.leader >= 0);
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      );
    }
  }

  async deleteTopic(topic: string): Promise<void> {
    await this.admin.deleteTopics({ topics: [topic] });
    this.topics.delete(topic);
  }

  /** A new consumer group named `<prefix>-<random>` whose offsets start at `topic`'s end; removed with the run. */
  async groupAtEnd(topic: string, prefix: string): Promise<string> {
    const groupId = await consumerGroupAtTopicEnd(this.brokers, topic, prefix);
    this.groups.add(groupId);
    return groupId;
  }

  /** A group a consumer of the bench creates itself; removed with the run. */
  ownGroup(groupId: string): string {
    this.groups.add(groupId);
    return groupId;
  }

  /** Messages on `topic` so far: the sum of its partitions' end offsets. */
  async endOffset(topic: string): Promise<number> {
    return (await this.admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.offset), 0);
  }

  /**
   * Deletes the run's consumer groups (their consumers must have left) and topics; returns what could not be
   * deleted, so the run can say so.
   */
  async remove(): Promise<string[]> {
    const left: string[] = [];
    if (this.groups.size > 0) {
      const groups = [...this.groups];
      this.groups.clear();
      const failed = await this.admin.deleteGroups(groups).then(
        () => [],
        (error: { groups?: { groupId: string; errorCode: number }[] }) =>
          error.groups
            ? // 69 GROUP_ID_NOT_FOUND: a group that never committed is gone once its consumer left.
              error.groups.filter((g) => g.errorCode !== 69).map((g) => g.groupId)
            : groups,
      );
      left.push(...failed.map((group) => `group ${group}`));
    }
    if (this.topics.size > 0) {
      await this.admin
        .deleteTopics({ topics: [...this.topics] })
        .catch(() => left.push(...[...this.topics].map((topic) => `topic ${topic}`)));
      this.topics.clear();
    }
    await this.admin.disconnect();
    return left;
  }
}
