import { randomUUID } from "node:crypto";
import { createPool } from "@crm/db";
import { poll, sleep } from "@crm/process";
import { createBusiness, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveContact } from "./resolve-contact.ts";
import {
  actualContacts,
  createWorkerTopics,
  dropWorkerTopics,
  expectedContacts,
  histogramQuantile,
  invariantViolations,
  overlappingLoad,
  RawEventProducer,
  rawEvent,
  startWorker,
  type WorkerTopics,
} from "./test-harness.ts";

// Two real worker processes (src/main.ts) in one consumer group on a private 12-partition topic: what SPEC 7's
// consumption rules promise under real concurrency, across keys, partitions and processes.
describe("resolver-worker consuming a raw topic with two instances", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
  const producer = new RawEventProducer(env.brokers);
  let topics: WorkerTopics;
  let workers: RunningService[] = [];
  let dlq: TopicProbe;

  beforeAll(async () => {
    topics = await createWorkerTopics(env.brokers, 12);
    await producer.connect();
    dlq = await new TopicProbe(env.brokers, topics.dlqTopic).start();
    // Three connections each: two instances and Postgres share this machine's cores (see env.ts).
    const sized = { DATABASE_POOL_SIZE: "3" };
    workers = await Promise.all([startWorker(topics, sized), startWorker(topics, sized)]);
  });

  afterAll(async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
    await Promise.all([producer.close(), dlq?.stop()]);
    if (topics) await dropWorkerTopics(env.brokers, topics);
    await admin.end();
  });

  const count = async (sql: string, params: unknown[]) =>
    Number((await admin.query(sql, params)).rows[0].count);

  const allApplied = (businessId: string, expected: number, timeoutMs = 60_000) =>
    poll(
      `${expected} events applied`,
      async () => {
        const applied = await count("SELECT count(*) FROM crm_events WHERE business_id = $1", [businessId]);
        return applied >= expected ? applied : undefined;
      },
      { timeoutMs: timeoutMs },
    );

  it("seed regression 2: 10 events with the same email on 10 partitions at once -> exactly 1 contact", async () => {
    const { businessId } = await createBusiness(admin);
    const events = Array.from({ length: 10 }, (_, i) =>
      rawEvent(
        businessId,
        { email: "alice@example.com" },
        { type: "signup", props: { idemKey: `test-${i}` } },
      ),
    );
    await producer.send(topics.topic, events, (i) => i);
    await allApplied(businessId, 10);
    expect(
      await count("SELECT count(*) FROM crm_contacts WHERE business_id = $1 AND email = $2", [
        businessId,
        "alice@example.com",
      ]),
    ).toBe(1);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("concurrency: hundreds of overlapping events over many keys, partitions and two processes end as one by one", async () => {
    const { businessId } = await createBusiness(admin);
    const events = overlappingLoad(businessId, 100, 6);
    const started = performance.now();
    await producer.send(topics.topic, events);
    await allApplied(businessId, events.length);
    const seconds = (performance.now() - started) / 1_000;

    const expected = expectedContacts(events);
    expect(await actualContacts(admin, businessId)).toEqual(expected);
    expect(await invariantViolations(admin, businessId)).toEqual([]);

    // The same events one by one, in production order, in a fresh business: the same contacts.
    const serial = await createBusiness(admin);
    const pool = createPool({ connectionString: env.databaseUrl, applicationName: "resolver-test", max: 1 });
    try {
      for (const event of events) {
        await resolveContact(pool, { ...event, business_id: serial.businessId, event_id: randomUUID() });
      }
    } finally {
      await pool.end();
    }
    expect(await actualContacts(admin, serial.businessId)).toEqual(expected);

    // No deadlock or unique violation surfaced, nothing dead-lettered, no PII in the logs.
    const output = workers.map((worker) => worker.output()).join("\n");
    expect(output).not.toMatch(/"err_code":"(40P01|40001|23505|55P03|57014)"/);
    expect(output).not.toMatch(/@load\.test|\+1555\d{7}/);
    expect(dlq.messages.filter((m) => m.key?.startsWith(businessId))).toEqual([]);

    const metrics = await Promise.all(workers.map(async (w) => (await fetch(`${w.url}/metrics`)).text()));
    const holdP50 = histogramQuantile(metrics, "resolver_lock_hold_seconds", 0.5) * 1_000;
    const holdP95 = histogramQuantile(metrics, "resolver_lock_hold_seconds", 0.95) * 1_000;
    const waitP95 = histogramQuantile(metrics, "resolver_lock_wait_seconds", 0.95) * 1_000;
    const both = metrics.filter((text) =>
      /resolver_events_applied_total\{outcome="created"\} [1-9]/.test(text),
    );
    console.log(
      `[concurrency] ${events.length} events, ${expected.length} contacts, two workers: ` +
        `${(events.length / seconds).toFixed(0)} events/s end to end; lock hold p50 ${holdP50.toFixed(2)} ms, ` +
        `p95 ${holdP95.toFixed(2)} ms, ` +
        `lock wait p95 ${waitP95.toFixed(2)} ms; workers that applied events: ${both.length}`,
    );
    // Hold and wait times are figures, not assertions: on a shared 2-core machine they are mostly CPU scheduling,
    // WAL flushes and how many events a combined transaction carries (one CI run saw a p95 of 533 ms). The bench
    // reports them; what this test asserts is that no event met a deadlock, a serialization or lock failure, a
    // unique violation or a statement timeout on the way.
  });

  it("rebalance: an instance stopping and another joining mid-load lose nothing and apply nothing twice", async () => {
    const { businessId } = await createBusiness(admin);
    const events = overlappingLoad(businessId, 100, 6);
    await producer.send(topics.topic, events);
    await poll(
      "a part of the load applied",
      async () =>
        (await count("SELECT count(*) FROM crm_events WHERE business_id = $1", [businessId])) >= 100
          ? true
          : undefined,
      { timeoutMs: 30_000 },
    );
    // graceful stop: finishes its events in flight, commits them, leaves; its partitions move to the other
    const leaving = workers.shift()!;
    const joining = startWorker(topics, { DATABASE_POOL_SIZE: "3" });
    expect(await leaving.stop("SIGTERM")).toBe(0);
    workers.push(await joining);
    await allApplied(businessId, events.length);
    expect(await actualContacts(admin, businessId)).toEqual(expectedContacts(events));
    expect(await invariantViolations(admin, businessId)).toEqual([]);
    expect(leaving.output()).toContain("shutting down");
  });

  it("poison: undecodable messages go to the DLQ with their reason; later events on the partition are applied", async () => {
    const { businessId } = await createBusiness(admin);
    const key = `${businessId}:email:poison@example.com`;
    await producer.sendBytes(topics.topic, { key, value: "not json {", partition: 3 });
    await producer.sendBytes(topics.topic, {
      key,
      value: JSON.stringify({ event_id: "nope", business_id: businessId }),
      partition: 3,
    });
    const unknownBusiness = rawEvent(randomUUID(), { email: "ghost@example.com" });
    const valid = rawEvent(businessId, { email: "poison@example.com" });
    await producer.send(topics.topic, [unknownBusiness, valid], () => 3);

    await allApplied(businessId, 1);
    const dead = await dlq.waitFor(
      (m) => m.key === key || m.key?.startsWith(unknownBusiness.business_id) === true,
      3,
    );
    const byOffset = dead.sort(
      (a, b) => Number(a.headers["source.offset"]) - Number(b.headers["source.offset"]),
    );
    for (const message of byOffset) {
      expect(message.headers).toMatchObject({
        "error.class": expect.any(String),
        "error.message": expect.any(String),
        "source.topic": topics.topic,
        "source.partition": "3",
        attempts: expect.any(String),
      });
    }
    expect(byOffset[0]!.value).toBe("not json {");
    expect(byOffset[0]!.headers["error.message"]).toMatch(/not JSON/);
    expect(byOffset[1]!.headers["error.message"]).toMatch(/does not match events.raw.v1/);
    expect(byOffset[2]!.headers["error.message"]).toMatch(/unknown business/);
    expect(await count("SELECT count(*) FROM crm_contacts WHERE business_id = $1", [businessId])).toBe(1);
    const output = workers.map((worker) => worker.output()).join("\n");
    expect(output).toContain("crm_track_contact_resolve_failed");
    expect(output).not.toContain("ghost@example.com");
  });

  it("redelivery: the same raw event on the topic twice -> one event row, no extra outbox row", async () => {
    const { businessId } = await createBusiness(admin);
    const event = rawEvent(businessId, { external_id: "acct_dup", name: "Dup" });
    await producer.send(topics.topic, [event]);
    await allApplied(businessId, 1);
    const outbox = await count("SELECT count(*) FROM outbox WHERE business_id = $1", [businessId]);
    // the copy on another partition too, so the other instance may be the one that sees it
    await producer.send(topics.topic, [event, event], (i) => (i === 0 ? 5 : 6));
    const marker = rawEvent(businessId, { external_id: "acct_dup" });
    await producer.send(topics.topic, [marker], () => 6);
    await allApplied(businessId, 2);
    await sleep(1_000);
    expect(await count("SELECT count(*) FROM crm_events WHERE id = $1", [event.event_id])).toBe(1);
    expect(await count("SELECT count(*) FROM outbox WHERE business_id = $1", [businessId])).toBe(outbox);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("serves /readyz and the SPEC 10 metrics", async () => {
    const ready = await fetch(`${workers[0]!.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ok: true, kafka: true, postgres: true });
    const text = await (await fetch(`${workers[0]!.url}/metrics`)).text();
    for (const name of [
      "resolver_consumer_lag",
      "resolver_events_applied_total",
      "resolver_merges_total",
      "resolver_identity_conflicts_total",
      "resolver_dlq_total",
      "resolver_lock_wait_seconds_bucket",
      "resolver_lock_hold_seconds_bucket",
    ]) {
      expect(text).toContain(name);
    }
  });
});
