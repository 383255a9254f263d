import { readdirSync, readFileSync } from "node:fs";
import { type PrivateBroker, startPrivateBroker } from "@crm/infra/stack";
import { createKafka, decodeFramedJson, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, signUserToken, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApi, type TestApi } from "./test-harness.ts";

// Kafka failure against a PRIVATE single broker (the shared one is never touched): while it hangs or is dead the
// API answers 503 with Retry-After within its send bound, never a 2xx; once it is back, requests succeed, and
// every event that got a 2xx is in the topic.
describe("kafka unavailable", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const sendTimeoutMs = 2_000;
  let kafka: PrivateBroker;
  let brokers: string[];
  let api: TestApi;

  beforeAll(async () => {
    kafka = await startPrivateBroker({ prefix: "ingest-kafka-down-", port: 29_092 });
    brokers = kafka.brokers;
    api = await startTestApi({ brokers, credentials: privateAdmin(), sendTimeoutMs });
  });

  afterAll(async () => {
    await api?.close();
    await kafka?.stop();
    await admin.end();
  });

  /** The private broker has its own SCRAM users. */
  const privateAdmin = () => kafka.credentials("admin");

  it("answers 503 quickly while Kafka hangs or is dead, and recovers when it returns", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const accepted: string[] = [];
    const track = async (headers: Record<string, string> = {}) => {
      const started = Date.now();
      const res = await api.post("/v1/track", token, { type: "k", business_id: businessId }, headers);
      if (res.status >= 200 && res.status < 300) accepted.push(res.body.event_id);
      return { ...res, ms: Date.now() - started };
    };
    for (let i = 0; i < 3; i++) expect((await track()).status).toBe(202);

    const expectUnavailable = (res: Awaited<ReturnType<typeof track>>) => {
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe("unavailable");
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(res.ms).toBeLessThan(sendTimeoutMs + 1_500);
    };

    // Hung broker (process frozen: sockets stay open, nothing answers).
    const pid = kafka.pid();
    process.kill(pid, "SIGSTOP");
    // kill() only queues the signal: wait until every thread of the JVM is stopped before sending.
    await poll("kafka to be stopped", async () => (allThreadsStopped(pid) ? true : undefined), {
      timeoutMs: 10_000,
    });
    const hung = await Promise.all([track(), track(), track({ "idempotency-key": "kafka-down-retry" })]);
    hung.forEach(expectUnavailable);
    expect((await api.app.request("/readyz")).status).toBe(503);

    // Dead broker (connection refused).
    process.kill(pid, "SIGKILL");
    await poll("kafka to die", async () => (kafka.alive() ? undefined : true), {
      timeoutMs: 30_000,
    });
    expectUnavailable(await track());
    expectUnavailable(await track({ "idempotency-key": "kafka-down-retry" }));

    await kafka.restart();
    const back = await poll(
      "a 2xx after Kafka returned",
      async () => {
        const res = await track();
        return res.status === 202 ? res : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(back.status).toBe(202);
    // The keyed request that failed was released, not left in flight: its retry goes through.
    const retried = await track({ "idempotency-key": "kafka-down-retry" });
    expect(retried.status).toBe(202);
    expect((await api.app.request("/readyz")).status).toBe(200);

    // Every event that got a 2xx is in the topic.
    const seen = new Set<string>();
    const schemaIds = new Set<number | undefined>();
    const consumer = createKafka({
      brokers,
      clientId: "kafka-down-check",
      credentials: privateAdmin(),
    }).consumer({
      groupId: `kafka-down-check-${Date.now()}`,
    });
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.raw, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const decoded = decodeFramedJson(message.value!);
        schemaIds.add(decoded.schemaId);
        seen.add((decoded.value as { event_id: string }).event_id);
      },
    });
    try {
      await poll(
        "every accepted event in Kafka",
        async () => (accepted.every((id) => seen.has(id)) ? true : undefined),
        { timeoutMs: 30_000 },
      );
    } finally {
      await consumer.disconnect();
    }
    expect(accepted.length).toBeGreaterThanOrEqual(5);
    // Values carry the schema-registry frame of events.raw.v1 (SPEC 5).
    expect(api.encoder.id).toEqual(expect.any(Number));
    expect([...schemaIds]).toEqual([api.encoder.id]);
    const logs = api.logs.text();
    expect(logs).not.toContain("kafka-down-retry");
  });
});

/** True when every thread of the process is in state T (stopped by a signal), from /proc. */
function allThreadsStopped(pid: number): boolean {
  return readdirSync(`/proc/${pid}/task`).every((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("T");
  });
}
