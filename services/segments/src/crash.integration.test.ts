import { poll, type ServiceProcess } from "@crm/process";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  applyEvent,
  changeLogProblems,
  consistentState,
  defineSegment,
  oracleMembers,
  outboxChanges,
  servicePool,
  startSegmentsService,
  storedMembers,
} from "./test-harness.ts";

const until = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 90_000) =>
  poll(what, fn, { timeoutMs, intervalMs: 20 });

// SIGKILL of services/segments while it backfills and while it handles triggers: after a restart (same consumer
// group, same job rows), no membership change is missed or published twice, because each page or trigger chunk
// commits its memberships, its outbox rows and its progress (job cursor; Kafka offsets after the commit) together or
// not at all, and evaluating again what was already applied writes nothing. Another test file's service may share
// the stack: it would only take part in the same jobs, under the same locks.
describe("segments: crash mid-backfill and mid-stream", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const pool = servicePool();
  let service: ServiceProcess;

  beforeAll(async () => {
    service = await startSegmentsService({ SEGMENTS_BACKFILL_PAGE: "10" });
  });
  afterAll(async () => {
    await service?.stop();
    await pool.end();
    await admin.end();
  });

  it("mid-backfill: the job resumes at its cursor; every member gets exactly one entry", async () => {
    const { businessId } = await createBusiness(admin);
    // 4,000 contacts with 0..3 purchases each, written as the admin in two statements (history that existed
    // before the segment).
    await admin.query(
      `INSERT INTO crm_contacts (id, business_id, email, first_seen_at, last_seen_at)
       SELECT gen_random_uuid(), $1, 'c' || i || '@example.com', now() - interval '20 days', now()
       FROM generate_series(1, 4000) i`,
      [businessId],
    );
    await admin.query(
      `INSERT INTO crm_events (id, business_id, contact_id, type, props, occurred_at)
       SELECT gen_random_uuid(), c.business_id, c.id, 'purchase', jsonb_build_object('amount', k * 10),
              now() - make_interval(days => k)
       FROM crm_contacts c CROSS JOIN generate_series(1, 3) k
       WHERE c.business_id = $1 AND k <= (hashtext(c.id::text) & 3)`,
      [businessId],
    );
    const segmentId = await defineSegment(pool, businessId, "two purchases", {
      event: { type: "purchase", window: { last_days: 30 }, measure: "count", op: ">=", value: 2 },
    });
    const job = async () =>
      (
        await admin.query<{ cursor: string | null; done: boolean }>(
          "SELECT cursor::text, done_at IS NOT NULL AS done FROM segment_jobs WHERE segment_id = $1",
          [segmentId],
        )
      ).rows[0];
    const midway = await until("the backfill half way", async () => {
      const state = await job();
      return state?.cursor && !state.done ? state : undefined;
    });
    service.signal("SIGKILL");
    const atKill = await job();
    const killedAt = (await storedMembers(pool, businessId)).length;
    console.log(`[segments] SIGKILL with the job at cursor ${midway.cursor} (${killedAt} members stored)`);
    expect(atKill?.done).toBe(false);

    await service.start(90_000);
    await until("the backfill done", async () => ((await job())?.done ? true : undefined));
    const members = await storedMembers(pool, businessId);
    expect(members).toEqual(await oracleMembers(pool, businessId));
    expect(members.length).toBeGreaterThan(killedAt);
    const log = await outboxChanges(pool, businessId);
    expect(log.every((c) => c.change === "entered")).toBe(true);
    expect(log.length).toBe(members.length);
    expect(changeLogProblems(log, members)).toEqual([]);
  });

  it("mid-stream: triggers redelivered after the kill change nothing twice, and nothing is missed", async () => {
    const { businessId } = await createBusiness(admin);
    await defineSegment(pool, businessId, "two purchases", {
      event: { type: "purchase", window: { last_days: 30 }, measure: "count", op: ">=", value: 2 },
    });
    await defineSegment(pool, businessId, "no view", {
      all: [{ no_event: { type: "view", last_days: 1 } }, { contact: { field: "email", op: "exists" } }],
    });
    const send = async (from: number, to: number) => {
      const work: Promise<unknown>[] = [];
      for (let i = from; i < to; i++) {
        const who = `m${i % 60}.${businessId.slice(0, 8)}@example.com`;
        work.push(
          applyEvent(pool, businessId, { type: ["purchase", "view", "purchase"][i % 3]!, email: who }),
        );
        if (work.length >= 4) await Promise.all(work.splice(0));
      }
      await Promise.all(work);
    };
    await send(0, 150);
    service.signal("SIGKILL");
    await send(150, 300);
    await service.start(90_000);
    await send(300, 360);
    const state = await until("memberships equal to the oracle", async () => {
      const read = await consistentState(pool, businessId);
      return JSON.stringify(read.stored) === JSON.stringify(read.oracle) ? read : undefined;
    });
    expect(state.stored.length).toBeGreaterThan(0);
    expect(changeLogProblems(state.changes, state.stored)).toEqual([]);
  });
});
