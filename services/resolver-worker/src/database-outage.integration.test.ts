import { createBusiness, eventually, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createWorkerTopics,
  dropWorkerTopics,
  PostgresProxy,
  RawEventProducer,
  rawEvent,
  startWorker,
  type WorkerTopics,
} from "./test-harness.ts";

// "The database is unavailable" as the worker sees it: no connection. A real worker reaches the real Postgres
// through a proxy the test can take away, so the outage is this worker's alone. The per-event cap is 2 s here:
// an outage many times longer must still dead-letter nothing, while an event that loses its connection on every
// attempt while the database answers everything else is dead-lettered once the cap has passed.
describe("resolver-worker when the database does not answer", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const producer = new RawEventProducer(env.brokers);
  const proxy = new PostgresProxy(env.databaseUrl);
  let topics: WorkerTopics;
  let worker: RunningService;
  let dlq: TopicProbe;

  beforeAll(async () => {
    topics = await createWorkerTopics(env.brokers, 6);
    await Promise.all([producer.connect(), proxy.start()]);
    dlq = await new TopicProbe(env.brokers, topics.dlqTopic).start();
    worker = await startWorker(topics, {
      DATABASE_URL: proxy.url,
      DATABASE_POOL_SIZE: "3",
      WORKER_EVENT_MAX_RETRY_MS: "2000",
    });
  });

  afterAll(async () => {
    await worker?.stop();
    await proxy.stop();
    await Promise.all([producer.close(), dlq?.stop()]);
    if (topics) await dropWorkerTopics(env.brokers, topics);
    await admin.end();
  });

  const applied = async (eventIds: string[]): Promise<number> =>
    Number(
      (await admin.query("SELECT count(*) FROM crm_events WHERE id = ANY ($1::uuid[])", [eventIds])).rows[0]
        .count,
    );

  it("a stopped database is waited out, however long past the cap: nothing dead-lettered, everything applied after", async () => {
    const { businessId } = await createBusiness(admin);
    const events = Array.from({ length: 6 }, (_, i) => rawEvent(businessId, { email: `outage${i}@db.test` }));
    await proxy.stop();
    const outageStarted = performance.now();
    await producer.send(topics.topic, events, (i) => i);
    await eventually("every partition failing on the outage", async () => {
      const failures = worker.output().match(/"failure":"unavailable","database_answers":false/g);
      return (failures?.length ?? 0) >= 6 ? true : undefined;
    });
    // Four times the per-event cap without a database.
    await new Promise((resolve) => setTimeout(resolve, 8_000));
    expect(await applied(events.map((e) => e.event_id))).toBe(0);
    await proxy.start();
    const outageMs = performance.now() - outageStarted;
    await eventually(
      "the events applied once the database is back",
      async () => ((await applied(events.map((e) => e.event_id))) === events.length ? true : undefined),
      30_000,
    );
    const recoveredMs = performance.now() - outageStarted - outageMs;
    expect(dlq.messages).toEqual([]);
    console.log(
      `[outage] ${(outageMs / 1000).toFixed(1)} s without a database (cap 2 s): nothing dead-lettered, ` +
        `${events.length} events applied ${(recoveredMs / 1000).toFixed(1)} s after it came back`,
    );
  });

  it("an event that loses its connection on every attempt while the database answers is dead-lettered after the cap; the others are applied", async () => {
    const { businessId } = await createBusiness(admin);
    const poison = rawEvent(businessId, { email: "cut@db.test" });
    const others = Array.from({ length: 6 }, (_, i) => rawEvent(businessId, { email: `live${i}@db.test` }));
    // Every statement carrying this event's id loses its connection; SELECT 1 and the other events do not.
    proxy.cutConnectionsSending(poison.event_id);
    try {
      const started = performance.now();
      await producer.send(topics.topic, [poison], () => 2);
      await producer.send(topics.topic, others, (i) => i);
      await eventually("the other events applied", async () =>
        (await applied(others.map((e) => e.event_id))) === others.length ? true : undefined,
      );
      const [dead] = await dlq.waitFor((m) => m.headers["source.partition"] === "2", 1, 20_000);
      const deadMs = performance.now() - started;
      expect(dead!.headers).toMatchObject({ "error.kind": "unavailable", "source.topic": topics.topic });
      expect(dead!.headers["error.message"]).toMatch(/Connection terminated|connection error/i);
      expect(Number(dead!.headers["retried.ms"])).toBeGreaterThanOrEqual(2_000);
      expect((dead!.value as { event_id: string }).event_id).toBe(poison.event_id);
      expect(await applied([poison.event_id])).toBe(0);
      console.log(
        `[outage] an event losing its connection every time on a live database: dead-lettered after ` +
          `${(deadMs / 1000).toFixed(1)} s (${dead!.headers.attempts} attempts, cap 2 s)`,
      );
    } finally {
      proxy.cutConnectionsSending(undefined);
    }
  });
});
