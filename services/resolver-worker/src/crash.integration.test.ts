import { createKafka } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, type RunningService, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  actualContacts,
  createWorkerTopics,
  dropWorkerTopics,
  expectedContacts,
  invariantViolations,
  overlappingLoad,
  RawEventProducer,
  rawEvent,
  startWorker,
  type WorkerTopics,
} from "./test-harness.ts";

// Failure of the worker process itself: SIGKILL in the middle of a load, then a full replay of the topic.
describe("resolver-worker crash and replay", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
  const producer = new RawEventProducer(env.brokers);
  let topics: WorkerTopics;
  let worker: RunningService | undefined;

  beforeAll(async () => {
    topics = await createWorkerTopics(env.brokers, 12);
    await producer.connect();
  });

  afterAll(async () => {
    await worker?.stop();
    await producer.close();
    if (topics) await dropWorkerTopics(env.brokers, topics);
    await admin.end();
  });

  const count = async (sql: string, params: unknown[]) =>
    Number((await admin.query(sql, params)).rows[0].count);
  const eventRows = (businessId: string) =>
    count("SELECT count(*) FROM crm_events WHERE business_id = $1", [businessId]);
  const outboxRows = (businessId: string) =>
    count("SELECT count(*) FROM outbox WHERE business_id = $1", [businessId]);
  const allApplied = (businessId: string, expected: number) =>
    poll(
      `${expected} events applied`,
      async () => ((await eventRows(businessId)) >= expected ? true : undefined),
      { timeoutMs: 60_000 },
    );

  it("SIGKILL mid-load, then restart: every event applied exactly once in effect; a full replay changes nothing", async () => {
    const { businessId } = await createBusiness(admin);
    const events = overlappingLoad(businessId, 250, 6);
    worker = await startWorker(topics, { DATABASE_POOL_SIZE: "4" });
    await producer.send(topics.topic, events);

    await poll(
      "a part of the load applied",
      async () => ((await eventRows(businessId)) >= 300 ? true : undefined),
      { timeoutMs: 30_000 },
    );
    await worker.stop("SIGKILL");
    const atKill = await eventRows(businessId);
    expect(atKill).toBeLessThan(events.length); // the kill really was mid-load

    worker = await startWorker(topics, { DATABASE_POOL_SIZE: "4" });
    await allApplied(businessId, events.length);
    expect(await eventRows(businessId)).toBe(events.length);
    expect(await actualContacts(admin, businessId)).toEqual(expectedContacts(events));
    expect(await invariantViolations(admin, businessId)).toEqual([]);
    console.log(
      `[crash] killed with ${atKill}/${events.length} events applied; all applied once after restart`,
    );

    // Graceful stop, then the whole topic again from offset 0 (a replay, as after a lost commit or an operator
    // reset): every event is a duplicate, nothing changes, not a single extra outbox row.
    const outboxBefore = await outboxRows(businessId);
    expect(await worker.stop("SIGTERM")).toBe(0);
    worker = undefined;
    const kafkaAdmin = createKafka({ brokers: env.brokers, clientId: "resolver-test-admin" }).admin();
    await kafkaAdmin.connect();
    try {
      await poll(
        "the group is empty",
        async () => {
          const [group] = (await kafkaAdmin.describeGroups([topics.groupId])).groups;
          return group?.members.length === 0 ? true : undefined;
        },
        { timeoutMs: 30_000 },
      );
      await kafkaAdmin.resetOffsets({ groupId: topics.groupId, topic: topics.topic, earliest: true });
    } finally {
      await kafkaAdmin.disconnect();
    }
    worker = await startWorker(topics, { DATABASE_POOL_SIZE: "4" });
    const sentinel = rawEvent(businessId, { email: "sentinel@example.com" });
    await producer.send(topics.topic, [sentinel]);
    await allApplied(businessId, events.length + 1);
    await poll(
      "the replay consumed",
      async () => {
        const text = await (await fetch(`${worker!.url}/metrics`)).text();
        const duplicates = Number(
          /resolver_events_applied_total\{outcome="duplicate"\} (\d+)/.exec(text)?.[1] ?? 0,
        );
        return duplicates >= events.length ? duplicates : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(await eventRows(businessId)).toBe(events.length + 1);
    expect(await outboxRows(businessId)).toBe(outboxBefore + 1); // the sentinel's `created` only
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });
});
