import { partitionKey } from "@crm/identity";
import { createBusiness, eventually, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  committedOffsets,
  createWorkerTopics,
  dropWorkerTopics,
  endOffsets,
  RawEventProducer,
  rawEvent,
  startWorker,
  type WorkerTopics,
} from "./test-harness.ts";

// An event that fails on a live database, against real worker processes: it is retried, then dead-lettered, and
// while it retries it holds only its own key. The failure used is one no decoder can see coming: an event id
// another tenant already used. RLS hides that event from the dedupe lookup, the insert hits crm_events' primary
// key, and Postgres answers 23505 (a unique race, retried as transient) on every attempt.
const env = testEnv();
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
const producer = new RawEventProducer(env.brokers);
// Dropped at the end: the shared producer keeps refreshing the metadata of every topic it wrote to.
const created: WorkerTopics[] = [];
const newTopics = async (partitions: number) => {
  const topics = await createWorkerTopics(env.brokers, partitions);
  created.push(topics);
  return topics;
};

beforeAll(async () => {
  await producer.connect();
});

afterAll(async () => {
  await producer.close();
  for (const topics of created) await dropWorkerTopics(env.brokers, topics);
  await admin.end();
});

const applied = async (eventIds: string[]): Promise<number> =>
  Number(
    (await admin.query("SELECT count(*) FROM crm_events WHERE id = ANY ($1::uuid[])", [eventIds])).rows[0]
      .count,
  );

const allApplied = (eventIds: string[], timeoutMs = 30_000) =>
  eventually(
    `${eventIds.length} events applied`,
    async () => ((await applied(eventIds)) === eventIds.length ? true : undefined),
    timeoutMs,
  );

/** An event of `businessId` whose id another business already used: fails with 23505 on every attempt. */
async function eventIdTakenByAnotherTenant(topic: string, businessId: string, partition: number) {
  const owner = await createBusiness(admin);
  const first = rawEvent(owner.businessId, { email: "first@poison.test" });
  await producer.send(topic, [first], () => partition);
  await allApplied([first.event_id]);
  return rawEvent(businessId, { email: "stuck@poison.test" }, { eventId: first.event_id });
}

/** Where a message sent to `partition` next will land. */
const nextOffset = async (topic: string, partition: number) =>
  (await endOffsets(env.brokers, topic)).get(partition)!;

describe("a failing event holds only its own key", () => {
  let topics: WorkerTopics;
  let worker: RunningService;
  let dlq: TopicProbe;

  beforeAll(async () => {
    topics = await newTopics(12);
    dlq = await new TopicProbe(env.brokers, topics.dlqTopic).start();
    // Retried by the wall-clock cap only (8 s), so the event is still retrying while the test looks at the rest.
    worker = await startWorker(topics, {
      DATABASE_POOL_SIZE: "4",
      WORKER_MAX_ATTEMPTS: "1000",
      WORKER_EVENT_MAX_RETRY_MS: "8000",
    });
  });

  afterAll(async () => {
    await worker?.stop();
    await dlq?.stop();
  });

  it("while a statement error is retried, events behind it on its partition and on every other partition are applied and committed; then it is dead-lettered with its reason", async () => {
    const { businessId } = await createBusiness(admin);
    const others = await Promise.all([createBusiness(admin), createBusiness(admin), createBusiness(admin)]);
    const poison = await eventIdTakenByAnotherTenant(topics.topic, businessId, 3);
    const poisonKey = partitionKey(businessId, poison.contact, poison.event_id);
    const poisonOffset = await nextOffset(topics.topic, 3);
    const started = performance.now();
    await producer.send(topics.topic, [poison], () => 3);
    await eventually("the worker failing the event", async () =>
      /"source_partition":3,[^\n]*"err_code":"23505"/.test(worker.output()) ? true : undefined,
    );

    // Sent after its first failure, so they need fetches after it: before this design kafkajs fetched again only
    // when the retrying batch returned, and nothing below was applied until the event gave up.
    const sameKey = rawEvent(businessId, { email: "stuck@poison.test" });
    const sameKeyPartition = [poison, sameKey].map((event) =>
      partitionKey(event.business_id, event.contact, event.event_id),
    );
    expect(sameKeyPartition[1]).toBe(sameKeyPartition[0]);
    const samePartition = rawEvent(businessId, { email: "free@poison.test" });
    const otherPartitions = Array.from({ length: 12 }, (_, p) => p)
      .filter((p) => p !== 3)
      .map((p) => ({ p, event: rawEvent(others[p % 3]!.businessId, { email: `p${p}@poison.test` }) }));
    await producer.send(topics.topic, [sameKey, samePartition], () => 3);
    await producer.send(
      topics.topic,
      otherPartitions.map(({ event }) => event),
      (i) => otherPartitions[i]!.p,
    );
    const behind = [samePartition, ...otherPartitions.map(({ event }) => event)].map((e) => e.event_id);
    await allApplied(behind, 20_000);
    const appliedAfterMs = performance.now() - started;

    // ...while the failing event is still being retried, and its key's next event still waits behind it.
    expect(dlq.messages.filter((m) => m.key === poisonKey)).toEqual([]);
    expect(await applied([sameKey.event_id])).toBe(0);
    // Committed: every other partition to its end; the failing partition exactly up to the failing event.
    const ends = await endOffsets(env.brokers, topics.topic);
    const committed = await eventually("the other partitions committed", async () => {
      const offsets = await committedOffsets(env.brokers, topics);
      return [...ends].every(([p, end]) => p === 3 || offsets.get(p) === end) ? offsets : undefined;
    });
    expect(committed.get(3)).toBe(poisonOffset);

    const [dead] = await dlq.waitFor((m) => m.key === poisonKey, 1, 30_000);
    const deadLetteredAfterMs = performance.now() - started;
    expect(dead!.headers).toMatchObject({
      "error.kind": "transient",
      "source.topic": topics.topic,
      "source.partition": "3",
      "source.offset": String(poisonOffset),
    });
    expect(dead!.headers["error.message"]).toMatch(/duplicate key value violates unique constraint/);
    expect(Number(dead!.headers.attempts)).toBeGreaterThan(1);
    expect(Number(dead!.headers["retried.ms"])).toBeGreaterThanOrEqual(8_000);
    expect((dead!.value as { event_id: string }).event_id).toBe(poison.event_id);
    await allApplied([sameKey.event_id], 10_000);
    const sameKeyAfterMs = performance.now() - started;
    await eventually("the failing partition committed past it", async () =>
      ((await committedOffsets(env.brokers, topics)).get(3) ?? -1n) > poisonOffset ? true : undefined,
    );
    console.log(
      `[poison] ${behind.length} events behind a retrying event (its partition and 11 others) applied ` +
        `${(appliedAfterMs / 1000).toFixed(1)} s after it was sent; it was dead-lettered after ` +
        `${(deadLetteredAfterMs / 1000).toFixed(1)} s (${dead!.headers.attempts} attempts, cap 8 s); its key's next ` +
        `event applied after ${(sameKeyAfterMs / 1000).toFixed(1)} s`,
    );
  });
});

describe("statement errors with the default retry settings", () => {
  let topics: WorkerTopics;
  let worker: RunningService;
  let dlq: TopicProbe;

  beforeAll(async () => {
    topics = await newTopics(4);
    dlq = await new TopicProbe(env.brokers, topics.dlqTopic).start();
    worker = await startWorker(topics, { DATABASE_POOL_SIZE: "3" });
  });

  afterAll(async () => {
    await worker?.stop();
    await dlq?.stop();
  });

  it("an event the database refuses every time is dead-lettered after WORKER_MAX_ATTEMPTS (5), within seconds", async () => {
    const { businessId } = await createBusiness(admin);
    const poison = await eventIdTakenByAnotherTenant(topics.topic, businessId, 1);
    const started = performance.now();
    await producer.send(topics.topic, [poison], () => 1);
    const [dead] = await dlq.waitFor((m) => m.headers["source.partition"] === "1", 1, 15_000);
    expect(dead!.headers).toMatchObject({ attempts: "5", "error.kind": "transient" });
    expect(dead!.headers["error.message"]).toMatch(/duplicate key value/);
    console.log(
      `[poison] 23505 every attempt: dead-lettered after ${(performance.now() - started).toFixed(0)} ms`,
    );
  });

  it("a NUL byte in a value written straight to the topic reaches the DLQ with its reason within seconds; a good event sent after it is applied", async () => {
    const { businessId } = await createBusiness(admin);
    const nul = rawEvent(businessId, { external_id: "nul", name: "M\u0000" });
    const good = rawEvent(businessId, { external_id: "after-nul" });
    const started = performance.now();
    await producer.send(topics.topic, [nul], () => 2);
    await producer.send(topics.topic, [good], () => 0);
    // Refused by Postgres (08P01 "invalid message format": the value ends the query string) after its retries,
    // or by the worker's decoder once it refuses control characters; never retried forever.
    const [dead] = await dlq.waitFor((m) => m.headers["source.partition"] === "2", 1, 15_000);
    expect(dead!.headers["error.message"]).toEqual(expect.any(String));
    expect(dead!.headers["error.kind"]).not.toBe("unavailable");
    await allApplied([good.event_id], 15_000);
    console.log(
      `[poison] NUL byte: dead-lettered after ${(performance.now() - started).toFixed(0)} ms ` +
        `(${dead!.headers.attempts} attempt(s): ${dead!.headers["error.message"]})`,
    );
  });
});

describe("shutdown while an event is failing", () => {
  let topics: WorkerTopics;
  let worker: RunningService | undefined;
  let dlq: TopicProbe;

  beforeAll(async () => {
    topics = await newTopics(4);
    dlq = await new TopicProbe(env.brokers, topics.dlqTopic).start();
  });

  afterAll(async () => {
    await worker?.stop();
    await dlq?.stop();
  });

  it("SIGTERM ends within seconds and leaves the failing event uncommitted; the next owner takes it up", async () => {
    const retryLong = {
      DATABASE_POOL_SIZE: "3",
      WORKER_MAX_ATTEMPTS: "1000",
      WORKER_EVENT_MAX_RETRY_MS: "60000",
    };
    worker = await startWorker(topics, retryLong);
    const { businessId } = await createBusiness(admin);
    const poison = await eventIdTakenByAnotherTenant(topics.topic, businessId, 2);
    const poisonOffset = await nextOffset(topics.topic, 2);
    await producer.send(topics.topic, [poison], () => 2);
    await eventually("the event failed a few times", async () =>
      (worker!.output().match(/"err_code":"23505"/g)?.length ?? 0) >= 3 ? true : undefined,
    );

    const stopping = performance.now();
    expect(await worker.stop("SIGTERM")).toBe(0);
    const stopMs = performance.now() - stopping;
    expect(stopMs).toBeLessThan(10_000);
    const first = worker;
    worker = undefined;
    expect(first.output()).toContain("shutting down");
    expect((await committedOffsets(env.brokers, topics)).get(2)).toBe(poisonOffset);
    expect(dlq.messages).toEqual([]);

    // The next owner starts it afresh (its own retries, here a 2 s cap) and dead-letters it.
    worker = await startWorker(topics, { ...retryLong, WORKER_EVENT_MAX_RETRY_MS: "2000" });
    const [dead] = await dlq.waitFor((m) => m.headers["source.offset"] === String(poisonOffset), 1, 20_000);
    expect(dead!.headers["source.partition"]).toBe("2");
    console.log(
      `[poison] SIGTERM while an event was retrying: exited in ${stopMs.toFixed(0)} ms, event uncommitted`,
    );
  });
});
