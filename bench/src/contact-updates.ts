import { decodeFramedJson, headerString, type Kafka, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import type pg from "pg";
import type { PacedRecord } from "./paced-load.ts";
import type { E2eLatency } from "./report.ts";
import { summarize } from "./stats.ts";

/** Consumes contact.updated.v1 from its end and keeps the first arrival time of each cause_event_id. */
export class ContactUpdates {
  readonly firstSeen = new Map<string, number>();
  messages = 0;
  private consumer: ReturnType<Kafka["consumer"]> | undefined;

  constructor(
    private readonly kafka: Kafka,
    /** A group whose offsets are at the topic's end (the bench removes it with the run). */
    private readonly groupId: string,
    private readonly businesses: Set<string>,
    private readonly admin: pg.Pool,
  ) {}

  async start(): Promise<void> {
    this.consumer = this.kafka.consumer({ groupId: this.groupId, maxWaitTimeInMs: 20 });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: TOPICS.contactUpdated });
    await this.consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: 4,
      eachBatch: async ({ batch }) => {
        const now = performance.timeOrigin + performance.now();
        for (const message of batch.messages) {
          if (!this.businesses.has(headerString(message.headers, "business_id") ?? "")) continue;
          this.messages++;
          if (!message.value) continue;
          try {
            const cause = (decodeFramedJson(message.value).value as { cause_event_id?: string })
              .cause_event_id;
            if (cause && !this.firstSeen.has(cause)) this.firstSeen.set(cause, now);
          } catch {}
        }
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect();
  }

  /**
   * End-to-end latency of a paced run's change-causing events (of `streams` only, when given): API 202 to the
   * first contact.updated.v1 message caused by that event, split at the worker's commit.
   */
  async latency(records: PacedRecord[], streams: number[] | undefined): Promise<E2eLatency> {
    const expected = new Map<string, number>();
    for (const record of records) {
      if (record.warmup || record.status !== 202) continue;
      if (streams && !streams.includes(record.stream)) continue;
      for (const id of record.changing) expected.set(id, record.doneAt);
    }
    // Drain: wait (bounded) until every change-causing event's message arrived.
    const missing = () => [...expected.keys()].filter((id) => !this.firstSeen.has(id)).length;
    await poll("every change-causing event's message", () => missing() === 0, {
      timeoutMs: 20_000,
      intervalMs: 250,
      throwOnTimeout: false,
    });
    // Where the time went: the outbox row's created_at is now(), the START of the worker's transaction, on the same
    // machine's clock, so 202 -> start is the API + Kafka + the worker's wait, and start -> message is the
    // transaction (statements, COMMIT) then Debezium and Connect.
    const since = Math.min(...records.map((record) => record.dueAt));
    const { rows } = await this.admin.query<{ id: string; at: number }>(
      `SELECT payload->>'cause_event_id' AS id, extract(epoch FROM min(created_at)) * 1000 AS at
       FROM outbox WHERE created_at >= to_timestamp($1 / 1000.0) AND business_id = ANY($2::uuid[]) GROUP BY 1`,
      [since - 1_000, [...this.businesses]],
    );
    const committedAt = new Map(rows.map((row) => [row.id, Number(row.at)]));
    const latencies: number[] = [];
    const toCommit: number[] = [];
    const commitToTopic: number[] = [];
    for (const [id, ackAt] of expected) {
      const seen = this.firstSeen.get(id);
      if (seen !== undefined) latencies.push(seen - ackAt);
      const committed = committedAt.get(id);
      if (committed !== undefined) toCommit.push(committed - ackAt);
      if (committed !== undefined && seen !== undefined) commitToTopic.push(seen - committed);
    }
    return {
      latencyMs: summarize(latencies),
      expected: expected.size,
      unmatched: missing(),
      ackToCommitMs: summarize(toCommit),
      commitToMessageMs: summarize(commitToTopic),
    };
  }
}
