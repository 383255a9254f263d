import { join } from "node:path";
import { decodeFramedJson, headerString, TOPICS } from "@crm/kafka";
import { poll, sleep } from "@crm/process";
import { createSegment } from "@crm/segment-definitions";
import { moveGroupToTopicEnd } from "@crm/testing";
import type { BenchRun, Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { ContactUpdates } from "../contact-updates.ts";
import { fmt } from "../report.ts";
import { type BenchService, startBenchService } from "../services.ts";
import { summarize } from "../stats.ts";
import { createTenant } from "../tenants.ts";

// BENCH_SEGMENTS_PORT: the bench's segments service (health, metrics)
const SEGMENTS_PORT = Number(process.env.BENCH_SEGMENTS_PORT ?? 18_094);
const HIGH_VALUE = {
  event: {
    type: "purchase",
    window: { last_days: 30 },
    measure: "sum",
    property: "amount",
    op: ">",
    value: 500,
  },
};

/**
 * Scenario 8 (issue 16; only with BENCH_ONLY=8): services/segments.
 *  a. backfill: one "high value" segment (sum of purchase amounts over 500 in 30 days) created over
 *     BENCH_SEGMENT_EVENTS stored events (default 1,000,000; 10 per contact), timed from its creation to its job's
 *     end (both Postgres times).
 *  b. latency: BENCH_E2E_RATE events/s through the API and the worker to businesses with 50 segments each; API 202
 *     to the `entered` message on segment.membership.v1 of the segment every new contact enters on its first event.
 */
export const segments: Scenario = {
  name: "scenario 8 segments",
  selectedBy: [8],
  async run(bench) {
    const service = await startSegments(bench);
    try {
      await backfill(bench);
      await latency(bench, service);
    } finally {
      await service.stop();
    }
  },
};

async function startSegments(bench: BenchRun): Promise<BenchService> {
  // The segments principal may use only groups prefixed "segments" (infra/src/stack/kafka-auth.ts).
  const groupId = await bench.kafka.groupAtEnd(TOPICS.eventsApplied, "segments-bench");
  await moveGroupToTopicEnd(bench.kafka.brokers, TOPICS.contactUpdated, groupId);
  return startBenchService({
    name: "segments-s7",
    entry: "services/segments/src/main.ts",
    env: { SEGMENTS_PORT: String(SEGMENTS_PORT), SEGMENTS_GROUP_ID: groupId },
    healthUrl: `http://127.0.0.1:${SEGMENTS_PORT}/readyz`,
    logFile: join(bench.logDir, `bench-${bench.runId}-segments.log`),
    profileDir: bench.cfg.profile ? bench.profileDir : undefined,
  });
}

async function backfill(bench: BenchRun): Promise<void> {
  const events = Number(process.env.BENCH_SEGMENT_EVENTS ?? 1_000_000);
  const contacts = Math.max(1, Math.floor(events / 10));
  const tenant = await createTenant(bench.admin, bench.runId, "s7-backfill");
  say(`scenario 8a: storing ${events} events of ${contacts} contacts`);
  await bench.admin.query(
    `INSERT INTO crm_contacts (id, business_id, email, first_seen_at, last_seen_at)
     SELECT gen_random_uuid(), $1, 'b' || i || '@example.com', now() - interval '60 days', now()
     FROM generate_series(1, $2::int) i`,
    [tenant.businessId, contacts],
  );
  // 10 purchases per contact, one every 6 days over 60 days, amounts 0..199: about half of them in the last 30 days.
  for (let done = 0; done < events; done += 100_000) {
    await bench.admin.query(
      `INSERT INTO crm_events (id, business_id, contact_id, type, props, occurred_at)
       SELECT gen_random_uuid(), $1, c.id, 'purchase', jsonb_build_object('amount', (k * 37 + c.n * 13) % 200),
              now() - make_interval(secs => (k * 518400 + (c.n * 7919) % 518400)::int)
       FROM (SELECT id, row_number() OVER () AS n FROM crm_contacts WHERE business_id = $1) c
       CROSS JOIN generate_series(1, 10) k
       WHERE (c.n - 1) * 10 + k > $2 AND (c.n - 1) * 10 + k <= $3`,
      [tenant.businessId, done, Math.min(events, done + 100_000)],
    );
  }
  await bench.admin.query("ANALYZE crm_events");
  // The inserts reach events.applied.v1 too; let Debezium finish streaming them so the backfill is timed alone.
  let last = -1;
  await poll(
    "events.applied.v1 to stop growing",
    async () => {
      const now = await bench.kafka.endOffset(TOPICS.eventsApplied);
      const still = now === last;
      last = now;
      if (!still) await sleep(2_000);
      return still ? true : undefined;
    },
    { timeoutMs: 30 * 60_000, intervalMs: 0 },
  );
  const client = await bench.admin.connect();
  let segmentId: string;
  try {
    segmentId = (
      await createSegment(client, {
        businessId: tenant.businessId,
        name: "high value",
        definition: HIGH_VALUE,
        changedBy: null,
      })
    ).id;
  } finally {
    client.release();
  }
  const done = await poll(
    "the backfill job done",
    async () => {
      const { rows } = await bench.admin.query<{ seconds: number; members: number }>(
        `SELECT extract(epoch FROM j.done_at - d.created_at)::float8 AS seconds,
                (SELECT count(*)::int FROM segment_memberships m WHERE m.segment_id = d.id AND m.is_member) AS members
         FROM segment_jobs j JOIN segment_definitions d ON d.id = j.segment_id
         WHERE j.segment_id = $1 AND j.done_at IS NOT NULL`,
        [segmentId],
      );
      return rows[0];
    },
    { timeoutMs: 60 * 60_000, intervalMs: 250 },
  );
  say(
    `  backfill of ${events} events (${contacts} contacts): ${fmt(done.seconds, 2)} s, ${done.members} members`,
  );
  bench.results.segmentsBackfill = { events, contacts, seconds: done.seconds, members: done.members };
}

async function latency(bench: BenchRun, service: BenchService): Promise<void> {
  const { cfg } = bench;
  // Businesses of their own, empty like the segments' first jobs expect: the run's e2e businesses hold the
  // contacts of scenarios 4 and 5 by now, and 500 first jobs over them took longer than the load itself.
  const tenants = await Promise.all(
    bench.tenants.e2e.map((_, i) => createTenant(bench.admin, bench.runId, `s8-${i}`)),
  );
  const targets = new Set<string>();
  for (const tenant of tenants) {
    const client = await bench.admin.connect();
    try {
      for (let i = 0; i < 50; i++) {
        // 49 segments the load keeps evaluating (counts, sums, absences, traits), one that each new contact enters.
        const definition =
          i === 0
            ? { event: { type: "bench.new", window: { last_days: 1 }, measure: "count", op: ">=", value: 1 } }
            : [
                {
                  event: {
                    type: "bench.repeat",
                    window: { last_days: 1 + (i % 30) },
                    measure: "count",
                    op: ">=",
                    value: 2 + (i % 3),
                  },
                },
                {
                  event: {
                    type: "bench.new",
                    window: { last_days: 30 },
                    measure: "sum",
                    property: "amount",
                    op: ">",
                    value: i * 10,
                  },
                },
                {
                  all: [
                    { no_event: { type: "bench.merge", last_days: 7 } },
                    { contact: { field: "email", op: "exists" } },
                  ],
                },
                { contact: { field: "name", op: "starts_with", value: `n${i}` } },
              ][i % 4]!;
        const made = await createSegment(client, {
          businessId: tenant.businessId,
          name: `s${i}`,
          definition,
          changedBy: null,
        });
        if (i === 0) targets.add(made.id);
      }
    } finally {
      client.release();
    }
  }
  // Segments are defined before the traffic they classify: their first jobs (over the run's few stored contacts)
  // finish before the load starts, so the figure is the steady state, not 500 backfills beside it.
  await poll(
    "the 50 segments' first jobs done",
    async () => {
      const { rows } = await bench.admin.query<{ pending: number }>(
        `SELECT count(*)::int AS pending FROM segment_definitions d
         LEFT JOIN segment_jobs j ON j.segment_id = d.id AND j.version = d.version AND j.done_at IS NOT NULL
         WHERE d.business_id = ANY($1::uuid[]) AND d.status = 'active' AND j.segment_id IS NULL`,
        [tenants.map((t) => t.businessId)],
      );
      return rows[0]!.pending === 0 ? true : undefined;
    },
    { timeoutMs: 10 * 60_000, intervalMs: 500 },
  );
  const entries = new Map<string, number>();
  // When the service evaluated the entry (the value's `at`, Postgres' clock in the transaction that wrote it).
  const evaluatedAt = new Map<string, number>();
  const groupId = await bench.kafka.groupAtEnd(TOPICS.segmentMembership, "bench-membership");
  const consumer = bench.kafka.kafka.consumer({ groupId, maxWaitTimeInMs: 20 });
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.segmentMembership });
  await consumer.run({
    autoCommit: false,
    partitionsConsumedConcurrently: 4,
    eachBatch: async ({ batch }) => {
      const now = performance.timeOrigin + performance.now();
      for (const message of batch.messages) {
        if (headerString(message.headers, "type") !== "segment.entered" || !message.value) continue;
        try {
          const value = decodeFramedJson(message.value).value as {
            segment_id: string;
            cause_event_id?: string;
            at: string;
          };
          if (targets.has(value.segment_id) && value.cause_event_id && !entries.has(value.cause_event_id)) {
            entries.set(value.cause_event_id, now);
            evaluatedAt.set(value.cause_event_id, Date.parse(value.at));
          }
        } catch {}
      }
    },
  });
  say(
    `scenario 8b: API -> segment.membership.v1 entered at ${cfg.e2eRate} events/s, 50 segments per business`,
  );
  // The ingest path's own figure in the same run (issue 16: its cost on the ingest path): 202 -> contact.updated.v1.
  const updates = new ContactUpdates(
    bench.kafka.kafka,
    await bench.kafka.groupAtEnd(TOPICS.contactUpdated, "bench-e2e"),
    new Set(tenants.map((t) => t.businessId)),
    bench.admin,
  );
  await updates.start();
  const services = [await bench.startApi("api-s7"), (await bench.startWorker("worker-s7")).worker];
  try {
    // The segments service is sampled with the phase but keeps running: entries arrive after the load ends.
    const load = await bench.phases.run(
      "7 segments",
      services,
      () =>
        bench.load.pacedLoad({
          keys: tenants.map((t) => t.key),
          weights: tenants.map(() => 1),
          rate: cfg.e2eRate,
        }),
      [service],
    );
    const contactUpdated = await updates.latency(load.records, undefined);
    const accepted = new Map<string, number>();
    for (const record of load.records) {
      if (record.warmup || record.status !== 202) continue;
      for (const id of record.changing) accepted.set(id, record.doneAt);
    }
    await poll(
      "entries to stop arriving",
      async () => {
        const before = entries.size;
        await sleep(3_000);
        return entries.size === before ? true : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 0 },
    );
    const latencies = [...accepted].flatMap(([id, at]) => (entries.has(id) ? [entries.get(id)! - at] : []));
    const summary = summarize(latencies);
    // The two halves: API 202 -> the service's evaluation, and that evaluation -> the topic (Debezium).
    const evaluated = summarize(
      [...accepted].flatMap(([id, at]) => (evaluatedAt.has(id) ? [evaluatedAt.get(id)! - at] : [])),
    );
    const streamed = summarize(
      [...entries].flatMap(([id, at]) => (evaluatedAt.has(id) ? [at - evaluatedAt.get(id)!] : [])),
    );
    say(
      `  of which accepted -> evaluated p50 ${fmt(evaluated.p50)} / p95 ${fmt(evaluated.p95)} ms; evaluated -> on the topic p50 ${fmt(streamed.p50)} / p95 ${fmt(streamed.p95)} ms`,
    );
    say(
      `  accepted -> entered p50 ${fmt(summary.p50)} / p95 ${fmt(summary.p95)} / p99 ${fmt(summary.p99)} ms over ${latencies.length} entries (${accepted.size} new-or-merge events accepted; merges enter nothing)`,
    );
    bench.results.segmentsLatency = {
      rate: cfg.e2eRate,
      segmentsPerBusiness: 50,
      latencyMs: summary,
      evaluatedMs: evaluated,
      streamedMs: streamed,
      entries: latencies.length,
      contactUpdated,
    };
    say(
      `  the same events' 202 -> contact.updated.v1 p50 ${fmt(contactUpdated.latencyMs.p50)} / p95 ${fmt(contactUpdated.latencyMs.p95)} ms`,
    );
  } finally {
    await updates.stop();
    await consumer.disconnect();
  }
}
