import { randomUUID } from "node:crypto";
import { type MembershipChange, MembershipConsumer } from "@crm/contact-consumer";
import { TOPICS } from "@crm/kafka";
import { poll, type ServiceProcess } from "@crm/process";
import {
  consumerGroupAtTopicEnd,
  createBusiness,
  type ProbedMessage,
  TopicProbe,
  testEnv,
} from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  applyEvent,
  changeLogProblems,
  defineSegment,
  oracleMembers,
  outboxChanges,
  servicePool,
  startSegmentsService,
  storedMembers,
} from "./test-harness.ts";

const DAY = 86_400_000;
const until = <T>(what: string, fn: () => Promise<T | undefined>) => poll(what, fn, { timeoutMs: 60_000 });

/**
 * Waits until every segment of `segmentIds` has a finished job at its current version. A segment's first job is
 * made by the service's job loop when it gets to it (which every test file's service shares, so it can lag);
 * until then a change may be published by a job page instead of by the trigger a test is about.
 */
const jobsDone = (admin: pg.Pool, segmentIds: string[]) =>
  until(`jobs of ${segmentIds.length} segments done`, async () => {
    const { rows } = await admin.query<{ done: number }>(
      `SELECT count(*)::int AS done FROM segment_jobs j JOIN segment_definitions d ON d.id = j.segment_id
       WHERE j.segment_id = ANY($1::uuid[]) AND j.done_at IS NOT NULL AND j.version = d.version`,
      [segmentIds],
    );
    return rows[0]!.done === segmentIds.length ? true : undefined;
  });
const SWEEP_MS = 1_000;
const countIn = (type: string, days: number, atLeast: number) => ({
  event: { type, window: { last_days: days }, measure: "count", op: ">=", value: atLeast },
});

// services/segments on the real stack: events applied by app.resolve_contact (the worker's transaction) reach it
// through Debezium (events.applied.v1, contact.updated.v1); its changes leave through segment_outbox ->
// Debezium -> segment.membership.v1.
describe("segments service", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const pool = servicePool();
  const probe = new TopicProbe(env.brokers, TOPICS.segmentMembership);
  let service: ServiceProcess;
  const email = () => `s.${randomUUID().slice(0, 12)}@example.com`;
  const changesOf = (businessId: string) => (m: ProbedMessage) => m.headers.business_id === businessId;

  beforeAll(async () => {
    await probe.start();
    service = await startSegmentsService({ SEGMENTS_SWEEP_INTERVAL_MS: String(SWEEP_MS) });
  });
  afterAll(async () => {
    await service?.stop();
    await probe.stop();
    await pool.end();
    await admin.end();
  });

  it("sliding window: enters on the third purchase, exits when the first leaves the 7 days (within sweep + 2 s)", async () => {
    const { businessId } = await createBusiness(admin);
    const segmentId = await defineSegment(
      pool,
      businessId,
      "3 purchases in 7 days",
      countIn("purchase", 7, 3),
    );
    const who = email();
    // The first purchase leaves the window 15 s from now.
    const leavesAt = Date.now() + 15_000;
    const contactId = await applyEvent(pool, businessId, {
      type: "purchase",
      email: who,
      occurredAt: new Date(leavesAt - 7 * DAY),
    });
    await applyEvent(pool, businessId, {
      type: "purchase",
      email: who,
      occurredAt: new Date(Date.now() - DAY),
    });
    await applyEvent(pool, businessId, { type: "login", email: who });
    const third = await applyEvent(pool, businessId, { type: "purchase", email: who });
    expect(third).toBe(contactId);

    const [entered] = await probe.waitFor(
      (m) => changesOf(businessId)(m) && m.headers.type === "segment.entered",
      1,
      60_000,
    );
    expect(entered!.key).toBe(contactId);
    expect(entered!.value).toMatchObject({
      business_id: businessId,
      segment_id: segmentId,
      segment_version: 1,
      contact_id: contactId,
      change: "entered",
    });
    // the trigger of the third purchase, or the new segment's backfill if it reached the contact first
    expect(["event", "backfill"]).toContain((entered!.value as { cause: string }).cause);
    expect(entered!.headers.id).toMatch(/^[0-9a-f-]{36}$/);

    const [exited] = await probe.waitFor(
      (m) => changesOf(businessId)(m) && m.headers.type === "segment.exited",
      1,
      60_000,
    );
    const exit = exited!.value as { at: string; cause: string };
    expect(exit.cause).toBe("time");
    const late = Date.parse(exit.at) - leavesAt;
    console.log(
      `[segments] window exit ${late} ms after the first purchase left the window (sweep ${SWEEP_MS} ms)`,
    );
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThanOrEqual(SWEEP_MS + 2_000);
    const log = await outboxChanges(pool, businessId);
    expect(log.map((c) => c.change)).toEqual(["entered", "exited"]);
    expect(await storedMembers(pool, businessId)).toEqual([]);
  });

  it("a merge moves membership to the survivor, and the contact merged away exits every segment", async () => {
    const { businessId } = await createBusiness(admin);
    const buyer = await defineSegment(pool, businessId, "bought", countIn("purchase", 30, 1));
    const loyal = await defineSegment(pool, businessId, "3 purchases", countIn("purchase", 30, 3));
    await jobsDone(admin, [buyer, loyal]);
    const mail = email();
    const phone = `+1555${String(Math.floor(Math.random() * 10_000_000)).padStart(7, "0")}`;
    const a = await applyEvent(pool, businessId, { type: "purchase", email: mail });
    await applyEvent(pool, businessId, { type: "purchase", email: mail });
    const b = await applyEvent(pool, businessId, { type: "purchase", phone });
    await until("both contacts in 'bought'", async () =>
      (await storedMembers(pool, businessId)).length === 2 ? true : undefined,
    );
    // A login with both identifiers merges b into a (the email's owner survives): a has 3 purchases now.
    const survivor = await applyEvent(pool, businessId, { type: "login", email: mail, phone });
    expect(survivor).toBe(a);
    const expected = [`${buyer}/${a}`, `${loyal}/${a}`].sort();
    await until("survivor in both, loser in none", async () =>
      JSON.stringify(await storedMembers(pool, businessId)) === JSON.stringify(expected) ? true : undefined,
    );
    expect(await oracleMembers(pool, businessId)).toEqual(expected);
    const exits = await probe.waitFor(
      (m) => changesOf(businessId)(m) && m.headers.type === "segment.exited",
      1,
      60_000,
    );
    expect(exits.map((m) => m.value)).toEqual([
      expect.objectContaining({ contact_id: b, segment_id: buyer, change: "exited" }),
    ]);
    // the merge's trigger, or a trigger of b's own purchase handled after the merge committed
    expect(["merge", "event"]).toContain((exits[0]!.value as { cause: string }).cause);
    await probe.waitFor(
      (m) =>
        changesOf(businessId)(m) && m.key === a && (m.value as { segment_id: string }).segment_id === loyal,
      1,
      60_000,
    );
    expect(changeLogProblems(await outboxChanges(pool, businessId), expected)).toEqual([]);
  });

  it("creating publishes only entries from stored history, an edit only the differences, an archive the exits", async () => {
    const { businessId } = await createBusiness(admin);
    // A downstream reader with the consumer kit: schema-checked, deduplicated on the outbox id.
    const read: MembershipChange[] = [];
    const reader = new MembershipConsumer({
      kafka: env.brokers,
      groupId: await consumerGroupAtTopicEnd(env.brokers, TOPICS.segmentMembership, "test-kit"),
      onChange: (change) => {
        if (change.businessId === businessId) read.push(change);
      },
    });
    await reader.start();
    const contacts: string[] = [];
    for (let i = 0; i < 6; i++) {
      const who = email();
      const id = await applyEvent(pool, businessId, {
        type: "purchase",
        email: who,
        props: { amount: i * 100 },
      });
      if (i % 2 === 0)
        await applyEvent(pool, businessId, { type: "purchase", email: who, props: { amount: 1 } });
      contacts.push(id);
    }
    const spend = (over: number) => ({
      event: {
        type: "purchase",
        window: { last_days: 30 },
        measure: "sum",
        property: "amount",
        op: ">",
        value: over,
      },
    });
    const segmentId = await defineSegment(pool, businessId, "spenders", spend(250));
    // amounts 0+1, 100, 200+1, 300, 400+1, 500: over 250 are contacts 3, 4, 5
    const membersOver = (ids: number[]) => ids.map((i) => `${segmentId}/${contacts[i]}`).sort();
    await until("backfill done", async () =>
      JSON.stringify(await storedMembers(pool, businessId)) === JSON.stringify(membersOver([3, 4, 5]))
        ? true
        : undefined,
    );
    await jobsDone(admin, [segmentId]);
    let log = await outboxChanges(pool, businessId);
    // entries only: from the backfill, or from the contacts' own triggers if they were evaluated first
    expect(log.map((c) => c.change)).toEqual(Array(3).fill("entered"));
    for (const c of log) expect(["backfill", "event"]).toContain(c.cause);

    await pool.query("SELECT 1");
    await (await import("@crm/db")).transaction(
      pool,
      "test_edit",
      async (client) => {
        const { updateSegment } = await import("@crm/segment-definitions");
        await updateSegment(client, { businessId, id: segmentId, definition: spend(150), changedBy: null });
      },
      { businessId },
    );
    // over 150: contacts 2, 3, 4, 5 -> only contact 2 enters
    await until("edit reconciled", async () =>
      JSON.stringify(await storedMembers(pool, businessId)) === JSON.stringify(membersOver([2, 3, 4, 5]))
        ? true
        : undefined,
    );
    log = await outboxChanges(pool, businessId);
    expect(log.slice(3).map((c) => [c.change, c.contact_id, c.segment_version])).toEqual([
      ["entered", contacts[2], 2],
    ]);
    // the edit's job, or a trigger of contact 2's own events still in flight that read version 2 first
    expect(["edit", "event"]).toContain(log[3]!.cause);
    const { rows } = await admin.query(
      "SELECT kind, done_at IS NOT NULL AS done FROM segment_jobs WHERE segment_id = $1",
      [segmentId],
    );
    expect(rows).toEqual([{ kind: "edit", done: true }]);

    await (await import("@crm/db")).transaction(
      pool,
      "test_archive",
      async (client) => {
        const { archiveSegment, getSegment } = await import("@crm/segment-definitions");
        expect((await getSegment(client, businessId, segmentId)).member_count).toBe(4);
        await archiveSegment(client, { businessId, id: segmentId, changedBy: null });
      },
      { businessId },
    );
    await until("archive exits", async () =>
      (await storedMembers(pool, businessId)).length === 0 ? true : undefined,
    );
    log = await outboxChanges(pool, businessId);
    expect(log.slice(4).map((c) => [c.change, c.cause, c.segment_version])).toEqual(
      Array(4).fill(["exited", "archive", 3]),
    );
    expect(changeLogProblems(log, [])).toEqual([]);
    await until("the kit read all 8 changes", async () => (read.length >= 8 ? true : undefined));
    await reader.stop();
    // each change once (partitions interleave differently; per contact the order is the log's)
    expect(read.map((c) => c.id).sort()).toEqual(log.map((c) => c.id).sort());
    for (const contactId of new Set(log.map((c) => c.contact_id))) {
      expect(read.filter((c) => c.contactId === contactId).map((c) => c.id)).toEqual(
        log.filter((c) => c.contact_id === contactId).map((c) => c.id),
      );
    }
  });

  it("answers /healthz, /readyz, /metrics, and any other path with a JSON 404, never a 5xx", async () => {
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    for (const name of [
      "segments_evaluations_total",
      "segments_membership_changes_total",
      "segments_trigger_lag_messages",
      "segments_sweep_duration_seconds",
    ]) {
      expect(metrics).toContain(name);
    }
    expect((await fetch(`${service.url}/healthz`)).status).toBe(200);
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: "grapheme", maxLength: 40 }), async (path) => {
        const res = await fetch(`${service.url}/${encodeURIComponent(path)}`, { method: "GET" });
        expect(res.status).toBeLessThan(500);
        await res.text();
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 100) },
    );
  });

  it("tenant isolation: another business's identical events and segments never count, and its ids are not found", async () => {
    const a = await createBusiness(admin);
    const b = await createBusiness(admin);
    const shared = email();
    const inB = await applyEvent(pool, b.businessId, { type: "purchase", email: shared });
    await applyEvent(pool, b.businessId, { type: "purchase", email: shared });
    const segB = await defineSegment(pool, b.businessId, "b", countIn("purchase", 30, 2));
    const segA = await defineSegment(pool, a.businessId, "a", countIn("purchase", 30, 2));
    const inA = await applyEvent(pool, a.businessId, { type: "purchase", email: shared });
    await until("b's backfill", async () =>
      (await storedMembers(pool, b.businessId)).length === 1 ? true : undefined,
    );
    await applyEvent(pool, a.businessId, { type: "login", email: shared });
    await until("a's job done", async () => {
      const { rows } = await admin.query(
        "SELECT 1 FROM segment_jobs WHERE segment_id = $1 AND done_at IS NOT NULL",
        [segA],
      );
      return rows.length === 1 ? true : undefined;
    });
    expect(await storedMembers(pool, a.businessId)).toEqual([]);
    expect(await storedMembers(pool, b.businessId)).toEqual([`${segB}/${inB}`]);
    expect(inA).not.toBe(inB);
    // A definition of A cannot name B's segment (the store refuses it as not found in this business).
    await expect(defineSegment(pool, a.businessId, "x", { segment: segB })).rejects.toThrow(
      /does not exist in this business/,
    );
  });

  it("erasure removes a member's memberships and membership changes, and no evaluation brings them back", async () => {
    const { businessId } = await createBusiness(admin);
    const bought = await defineSegment(pool, businessId, "bought", countIn("purchase", 30, 1));
    await jobsDone(admin, [bought]);
    const gone = await applyEvent(pool, businessId, { type: "purchase", email: email() });
    await until("the contact a member", async () =>
      (await storedMembers(pool, businessId)).length === 1 ? true : undefined,
    );
    const rowsOf = async (contactId: string) =>
      (
        await admin.query<{ n: number }>(
          `SELECT (SELECT count(*) FROM segment_memberships WHERE contact_id = $1)
                + (SELECT count(*) FROM segment_outbox WHERE contact_id = $1) AS n`,
          [contactId],
        )
      ).rows[0]!.n;
    expect(Number(await rowsOf(gone))).toBeGreaterThan(0);
    // the erasure's second step, as the API runs it (the tenant set); its triggers may still be in flight
    const client = await admin.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT set_config('app.business_id', $1, true)", [businessId]);
      await client.query(
        "SELECT * FROM app.erase_contacts($1, ARRAY[$2]::uuid[], '[]'::jsonb, ARRAY[]::text[], 'test', 'contact_id')",
        [businessId, gone],
      );
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    expect(Number(await rowsOf(gone))).toBe(0);
    // another contact's entry is handled after the erased contact's triggers: still nothing for it
    const other = await applyEvent(pool, businessId, { type: "purchase", email: email() });
    await until("the other contact a member", async () =>
      JSON.stringify(await storedMembers(pool, businessId)) === JSON.stringify([`${bought}/${other}`])
        ? true
        : undefined,
    );
    expect(Number(await rowsOf(gone))).toBe(0);
  });
});
