import { type PrivateBroker, startPrivateBroker } from "@crm/infra/stack";
import { KAFKA_PRINCIPALS, type KafkaPrincipal } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, freePort, type RunningService, startService, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIngestKey, eventCount, segmentClient } from "./segment-fixtures.ts";

// Issue 15: analytics-node against a listener whose Kafka is stopped for a few seconds. A PRIVATE single broker
// (the shared one is never touched) carries events.raw.v1 between a real ingest-api and a real resolver-worker on
// the shared Postgres; the broker is frozen (SIGSTOP: sockets open, nothing answers) while the SDK sends. The
// listener answers 503 within its send bound, the SDK retries, and in the end every message is applied once.
describe("Segment listener while Kafka is stopped", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let kafka: PrivateBroker;
  let api: RunningService;
  let worker: RunningService;
  let segmentUrl: string;

  beforeAll(async () => {
    kafka = await startPrivateBroker({ prefix: "segment-kafka-down-" });
    const brokers = kafka.brokers.join(",");
    // The private broker has its own SCRAM users: each service gets its own principal's credentials.
    const principal = (name: KafkaPrincipal) => {
      const { username, password } = kafka.credentials(name);
      const prefix = `KAFKA_${KAFKA_PRINCIPALS[name]}`;
      return { [`${prefix}_USERNAME`]: username, [`${prefix}_PASSWORD`]: password };
    };
    const [apiPort, segmentPort, workerPort] = [await freePort(), await freePort(), await freePort()];
    segmentUrl = `http://127.0.0.1:${segmentPort}`;
    [api, worker] = await Promise.all([
      startService({
        entry: "services/ingest-api/src/main.ts",
        env: {
          KAFKA_BROKERS: brokers,
          ...principal("ingest-api"),
          INGEST_PORT: String(apiPort),
          SEGMENT_PORT: String(segmentPort),
          KAFKA_SEND_TIMEOUT_MS: "2000",
          INGEST_INSTANCE_GROUP: `segment-kafka-down-${Date.now()}`,
        },
        healthUrl: `http://127.0.0.1:${apiPort}/healthz`,
      }),
      startService({
        entry: "services/resolver-worker/src/main.ts",
        env: {
          KAFKA_BROKERS: brokers,
          ...principal("resolver-worker"),
          WORKER_PORT: String(workerPort),
          WORKER_GROUP_ID: "segment-kafka-down",
        },
        healthUrl: `http://127.0.0.1:${workerPort}/healthz`,
      }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    await kafka?.stop();
    await admin.end();
  });

  it("answers 503 while Kafka is frozen; the SDK's retries apply every message exactly once", async () => {
    const { businessId } = await createBusiness(admin);
    const writeKey = await createIngestKey(admin, businessId);
    const { analytics, statuses, failures } = segmentClient(segmentUrl, writeKey, { flushAt: 5 });
    for (let i = 0; i < 5; i++) analytics.track({ userId: `k-${i % 2}`, event: "Before", properties: { i } });
    await poll(
      "the first messages applied",
      async () => ((await eventCount(admin, businessId)) >= 5 ? true : undefined),
      {
        timeoutMs: 60_000,
      },
    );

    const pid = kafka.pid();
    process.kill(pid, "SIGSTOP");
    const frozenAt = Date.now();
    for (let i = 5; i < 20; i++)
      analytics.track({ userId: `k-${i % 2}`, event: "During", properties: { i } });
    await poll("a 503 from the listener", async () => (statuses.includes(503) ? true : undefined), {
      timeoutMs: 30_000,
    });
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 5_000 - (Date.now() - frozenAt))));
    process.kill(pid, "SIGCONT");

    await analytics.closeAndFlush();
    expect(failures).toEqual([]);
    expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([]);
    await poll(
      "every message applied",
      async () => ((await eventCount(admin, businessId)) >= 20 ? true : undefined),
      {
        timeoutMs: 90_000,
      },
    );
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const { rows } = await admin.query<{ i: string; n: number }>(
      "SELECT props->>'i' AS i, count(*)::int AS n FROM crm_events WHERE business_id = $1 GROUP BY 1",
      [businessId],
    );
    expect(rows).toHaveLength(20);
    expect(rows.every((row) => row.n === 1)).toBe(true);
    console.log(`[segment kafka-down] statuses the SDK saw, in order: ${statuses.join(" ")}`);
  });
});
