/**
 * Worker throughput probe (development tool, not a test): fills a private topic with N raw events of a realistic
 * identity mix (about 50% new contacts, 45% repeat contacts, 5% events that merge two contacts), then starts the
 * real worker (`src/main.ts`) on it and reports how fast the events are applied (steady rate between 10% and 90%
 * of the backlog), with the CPU each process used meanwhile. Same-run raw limit: `pgbench` on the same function.
 *
 *   npx tsx services/resolver-worker/scripts/load.ts [events=20000] [KEY=value worker env ...]
 */

import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { stackEnv } from "@crm/config";
import { NonRetriableError } from "@crm/errors";
import { freePort, poll, ServiceProcess } from "@crm/process";
import { createBusiness } from "@crm/testing";
import pg from "pg";
import {
  type Contact,
  createWorkerTopics,
  dropWorkerTopics,
  histogramQuantile,
  RawEventProducer,
  rawEvent,
} from "../src/test-harness.ts";

const total = Number(process.argv[2] ?? 20_000);
const workerEnv = Object.fromEntries(
  process.argv.slice(3).map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
);
const env = stackEnv();
const brokers = env.KAFKA_BROKERS!.split(",");
const admin = new pg.Pool({ connectionString: env.DATABASE_ADMIN_URL, max: 2 });

const businesses = await Promise.all(Array.from({ length: 4 }, () => createBusiness(admin)));
const events = [];
const known: Contact[][] = businesses.map(() => []);
for (let i = 0; i < total; i++) {
  const b = i % businesses.length;
  const businessId = businesses[b]!.businessId;
  const pool = known[b]!;
  const roll = Math.random();
  let contact: Contact;
  if (pool.length < 20 || roll < 0.5) {
    const n = randomUUID().slice(0, 12);
    contact = Math.random() < 0.5 ? { email: `u${n}@example.com` } : { external_id: `acct_${n}`, name: "A" };
    pool.push(contact);
  } else if (roll < 0.95) {
    contact = pool[Math.floor(Math.random() * pool.length)]!;
  } else {
    // a merge: an email-only contact's email together with a new phone of an email-less contact
    const a = pool[Math.floor(Math.random() * pool.length)]!;
    const phone = `+1555${String(Math.floor(Math.random() * 9_000_000) + 1_000_000)}`;
    contact = { ...a, phone };
    pool.push({ phone });
  }
  events.push(rawEvent(businessId, contact, { type: "load", props: { i, plan: "pro", path: "/pricing" } }));
}

const topics = await createWorkerTopics(brokers);
const producer = await new RawEventProducer(brokers).connect();
let t = performance.now();
await producer.send(topics.topic, events);
await producer.close();
console.log(`produced ${total} events in ${((performance.now() - t) / 1000).toFixed(1)} s`);

function cpuTicks(): Map<string, number> {
  const byGroup = new Map<string, number>();
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(fields[11]) + Number(fields[12]);
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      const group = cmd.startsWith("postgres:")
        ? `postgres ${cmd.split(" ")[1]}`
        : cmd.includes("resolver-worker/src/main.ts")
          ? "worker"
          : cmd.includes("kafka.Kafka")
            ? "kafka"
            : cmd.includes("ConnectDistributed")
              ? "connect"
              : cmd.includes("java")
                ? "java other"
                : "other";
      byGroup.set(group, (byGroup.get(group) ?? 0) + ticks);
    } catch {}
  }
  return byGroup;
}

const port = await freePort();
const countSql = `SELECT count(*)::int AS n FROM crm_events WHERE business_id = ANY($1::uuid[])`;
const ids = businesses.map((b) => b.businessId);
const worker = new ServiceProcess({
  name: "resolver-worker",
  entry: "services/resolver-worker/src/main.ts",
  env: {
    WORKER_PORT: String(port),
    WORKER_TOPIC: topics.topic,
    WORKER_DLQ_TOPIC: topics.dlqTopic,
    WORKER_GROUP_ID: topics.groupId,
    LOG_LEVEL: "warn",
    ...workerEnv,
  },
  healthUrl: `http://127.0.0.1:${port}/healthz`,
  output: "inherit",
  // PROFILE_DIR=<dir>: the worker runs under --cpu-prof and writes its profile there when it exits.
  cpuProfileDir: process.env.PROFILE_DIR,
});
await worker.start();
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));
t = performance.now();
let at10: { t: number; n: number } | undefined;
let at90: { t: number; n: number } | undefined;
let cpu10: Map<string, number> | undefined;
let cpu90: Map<string, number> | undefined;
let lastCount = -1;
let lastProgress = performance.now();
// Samples the applied count until every event is in, or nothing moved for 20 s (dead-lettered or stuck).
await poll(
  "every event applied",
  async () => {
    const n = (await admin.query(countSql, [ids])).rows[0].n as number;
    const now = performance.now();
    if (!at10 && n >= total * 0.1) [at10, cpu10] = [{ t: now, n }, cpuTicks()];
    if (!at90 && n >= total * 0.9) [at90, cpu90] = [{ t: now, n }, cpuTicks()];
    if (n !== lastCount) [lastCount, lastProgress] = [n, now];
    if (n >= total) return true;
    if (now - lastProgress > 20_000) throw new NonRetriableError(`stalled at ${n} of ${total} events`);
    return false;
  },
  { timeoutMs: 3_600_000, intervalMs: 250 },
).catch((error) => console.log(`${(error as Error).message} (dead-lettered or stuck)`));
const rate = at10 && at90 ? ((at90.n - at10.n) / (at90.t - at10.t)) * 1000 : 0;
const secs = at10 && at90 ? (at90.t - at10.t) / 1000 : 1;
console.log(`applied ${total} events; steady ${rate.toFixed(0)} events/s (10%..90% of the backlog)`);
if (cpu10 && cpu90) {
  const before = cpu10;
  const rows = [...cpu90].map(([g, v]) => [g, (v - (before.get(g) ?? 0)) / 100 / secs] as const);
  for (const [g, c] of rows.sort((a, b) => b[1] - a[1]).slice(0, 8)) {
    console.log(
      `  cpu ${(c * 100).toFixed(0).padStart(4)}%  ${g}  (${((c / rate) * 1e6).toFixed(0)} us/event)`,
    );
  }
}
const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((res) => res.text());
for (const metric of [
  "resolver_lock_hold_seconds",
  "resolver_lock_wait_seconds",
  "resolver_transaction_seconds",
]) {
  const p50 = histogramQuantile([metrics], metric, 0.5) * 1000;
  const p95 = histogramQuantile([metrics], metric, 0.95) * 1000;
  console.log(`  ${metric} p50 ${p50.toFixed(1)} ms, p95 ${p95.toFixed(1)} ms`);
}
await worker.stop();
await dropWorkerTopics(brokers, topics);
await admin.end();
