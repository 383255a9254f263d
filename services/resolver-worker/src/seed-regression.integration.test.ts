import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import {
  createBusiness,
  freePort,
  type RunningService,
  signUserToken,
  startService,
  testEnv,
} from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  dropWorkerTopics,
  groupAtTopicEnd,
  invariantViolations,
  startWorker,
  type WorkerTopics,
} from "./test-harness.ts";

// The seed's regression 2 as it was written: ten parallel HTTP requests with the same email and different
// idempotency keys, through the real ingest-api and events.raw.v1 into a real worker (on a private consumer group
// that starts at the topic's end, so the shared topic's history is not replayed).
describe("seed regression 2 through the API", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let api: RunningService;
  let worker: RunningService;
  let group: WorkerTopics;

  beforeAll(async () => {
    group = await groupAtTopicEnd(env.brokers, TOPICS.raw);
    const apiPort = await freePort();
    [api, worker] = await Promise.all([
      startService({
        entry: "services/ingest-api/src/main.ts",
        env: { INGEST_PORT: String(apiPort) },
        healthUrl: `http://127.0.0.1:${apiPort}/healthz`,
      }),
      startWorker(group),
    ]);
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    if (group) await dropWorkerTopics(env.brokers, group);
    await admin.end();
  });

  it("10 parallel requests with the same email -> exactly 1 contact", async () => {
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    const statuses = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const res = await fetch(`${api.url}/v1/track`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
            "idempotency-key": `test-${i}`,
          },
          body: JSON.stringify({
            type: "signup",
            business_id: businessId,
            contact: { email: "alice@example.com" },
          }),
        });
        return res.status;
      }),
    );
    expect(statuses).toEqual(Array(10).fill(202));
    await poll(
      "10 events applied",
      async () => {
        const { rows } = await admin.query(
          "SELECT count(*)::int AS n FROM crm_events WHERE business_id = $1",
          [businessId],
        );
        return rows[0].n === 10 ? true : undefined;
      },
      { timeoutMs: 30_000 },
    );
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM crm_contacts WHERE business_id = $1 AND email = 'alice@example.com'",
      [businessId],
    );
    expect(rows[0].n).toBe(1);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });
});
