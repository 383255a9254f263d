import { spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { repoRoot, stackDir, stackEnv } from "@crm/config";
import { createKafka, decodeFramedJson, headerString, type Kafka, TOPICS } from "@crm/kafka";
import { consumerGroupAtTopicEnd } from "@crm/testing";
import pg from "pg";
// The worker's own config schema: pgbench mirrors its pool size and events per transaction (a read of defaults;
// the bench never runs worker code in-process).
import { WorkerEnv } from "../../services/resolver-worker/src/env.ts";
import { runPgbench, runProducerPerf } from "./limits.ts";
import type { MaxLoadConfig } from "./max-load.ts";
import type { PacedLoadConfig, PacedRecord } from "./paced-load.ts";
import { summarizeProfileFile } from "./profile.ts";
import { type BenchResults, buildReport, fmt, type Phase } from "./report.ts";
import { round, Sampler } from "./sampler.ts";
import {
  type BenchService,
  mainThreadProfile,
  runNodeChild,
  startBenchService,
  stopAllServices,
} from "./services.ts";
import {
  histogramQuantile,
  parseCounterTotal,
  parseGauge,
  parseHistogram,
  slope,
  summarize,
} from "./stats.ts";

/*
 * `npm run bench` (issue 6): each scenario after a warm-up, for a fixed time, against the shared stack, with its
 * own ingest-api and resolver-worker child processes on private ports (restarted per scenario, so each has its own
 * CPU profile and metrics), load from separate child processes, and the machine's limits (Kafka producer perf,
 * pgbench of the resolve transaction) measured in the same run. Markdown table to stdout, everything to
 * bench/results/latest.json. `npm run bench -- profile <file.cpuprofile>` summarizes a profile.
 *
 * Environment: BENCH_DURATION_S (20), BENCH_WARMUP_S (5), BENCH_ONLY (e.g. "1,4"; 6 = limits), BENCH_E2E_RATE
 * (1000 events/s), BENCH_E2E_OFFERED (8000 events/s offered to find the applied ceiling), BENCH_CONNECTIONS (64),
 * BENCH_PROFILE (1; 0 = no --cpu-prof), BENCH_API_PORT (18080), BENCH_WORKER_PORT (18091).
 */

const root = repoRoot();
const envInt = (name: string, fallback: number) => {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && process.env[name] !== "" && process.env[name] !== undefined
    ? value
    : fallback;
};
const cfg = {
  durationS: envInt("BENCH_DURATION_S", 20),
  warmupS: envInt("BENCH_WARMUP_S", 5),
  only: new Set(
    (process.env.BENCH_ONLY ?? "1,2,3,4,5,6")
      .split(",")
      .map((part) => Number(part.trim()))
      .filter(Boolean),
  ),
  e2eRate: envInt("BENCH_E2E_RATE", 1_000),
  offeredRate: envInt("BENCH_E2E_OFFERED", 8_000),
  connections: envInt("BENCH_CONNECTIONS", 64),
  profile: process.env.BENCH_PROFILE !== "0",
  apiPort: envInt("BENCH_API_PORT", 18_080),
  workerPort: envInt("BENCH_WORKER_PORT", 18_091),
  /** Other tenants in the end-to-end scenarios (the hot tenant of scenario 5 is one more). */
  tenants: 10,
};
/** The plan of the bench businesses; the bench's ingest-api gets a limit for it that cannot throttle the load. */
const BENCH_PLAN = "bench";
const BENCH_PLAN_LIMIT = 10_000_000;

const say = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const runId = `${new Date().toISOString().replace(/[:.]/g, "-")}`;
const logDir = join(stackDir(), "logs");
const profileDir = join(logDir, `bench-${runId}-profiles`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function npm(args: string[]): number {
  return (
    spawnSync("npm", ["run", "--silent", ...args], { cwd: root, stdio: ["ignore", "inherit", "inherit"] })
      .status ?? 1
  );
}

/** Pids of the shared stack's processes, from the launcher's pid files. */
function stackPids(): Record<string, number> {
  const pids: Record<string, number> = {};
  for (const name of ["postgres", "kafka", "connect", "registry"]) {
    const file = join(stackDir(), "pids", `${name}.pid`);
    if (!existsSync(file)) continue;
    try {
      const text = readFileSync(file, "utf8").trim();
      pids[name] = text.startsWith("{") ? (JSON.parse(text) as { pid: number }).pid : Number(text);
    } catch {}
  }
  return pids;
}

interface Tenant {
  businessId: string;
  key: string;
}

/** A business on the bench plan with a fresh ingest key (the same SQL as `npm run ingest-keys -- create`). */
async function createTenant(admin: pg.Pool, label: string): Promise<Tenant> {
  const businessId = randomUUID();
  await admin.query(
    "INSERT INTO businesses (id, name, owner_id, plan, default_country) VALUES ($1, $2, $3, $4, 'US')",
    [businessId, `bench ${label} ${runId}`, randomUUID(), BENCH_PLAN],
  );
  const key = `ik_${randomBytes(32).toString("base64url")}`;
  // hashIngestKey (services/ingest-api/src/auth.ts) is the hex SHA-256 of the key's UTF-8 bytes.
  await admin.query(
    "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), $3)",
    [businessId, key, `bench ${runId}`],
  );
  return { businessId, key };
}

/** Consumes contact.updated.v1 from its end and keeps the first arrival time of each cause_event_id. */
class ContactUpdates {
  readonly firstSeen = new Map<string, number>();
  messages = 0;
  private consumer: ReturnType<Kafka["consumer"]> | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly businesses: Set<string>,
  ) {}

  async start(): Promise<void> {
    const groupId = await consumerGroupAtTopicEnd(
      (stackEnv().KAFKA_BROKERS ?? "").split(","),
      TOPICS.contactUpdated,
      "bench-e2e",
    );
    this.consumer = this.kafka.consumer({ groupId, maxWaitTimeInMs: 20 });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: TOPICS.contactUpdated });
    await this.consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: 4,
      eachBatch: async ({ batch }) => {
        const now = performance.timeOrigin + performance.now();
        for (const message of batch.messages) {
          if (!this.businesses.has(headerString(message.headers, "business_id") ?? "")) continue;
          this.messages++;
          if (!message.value) continue;
          try {
            const cause = (decodeFramedJson(message.value).value as { cause_event_id?: string })
              .cause_event_id;
            if (cause && !this.firstSeen.has(cause)) this.firstSeen.set(cause, now);
          } catch {}
        }
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect();
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === "profile") {
    for (const file of process.argv.slice(3))
      console.log(JSON.stringify(summarizeProfileFile(file), null, 2));
    return;
  }
  const started = Date.now();
  mkdirSync(profileDir, { recursive: true });
  say(
    `run ${runId}: warm-up ${cfg.warmupS} s, duration ${cfg.durationS} s, scenarios ${[...cfg.only].join(",")}`,
  );
  if (npm(["stack", "--", "status"]) !== 0 && npm(["stack", "--", "up"]) !== 0)
    throw new Error("stack did not come up");
  if (npm(["migrate"]) !== 0) throw new Error("migrations failed");
  if (npm(["connector", "--", "register"]) !== 0) throw new Error("connector registration failed");
  if (npm(["schemas", "--", "register"]) !== 0) throw new Error("schema registration failed");
  const env = stackEnv();
  const brokers = env.KAFKA_BROKERS!.split(",");
  const partitions = Number(env.KAFKA_PARTITIONS ?? 12);
  const admin = new pg.Pool({ connectionString: env.DATABASE_ADMIN_URL, max: 3, application_name: "bench" });
  const kafka = createKafka({ brokers, clientId: "bench" });
  const kafkaAdmin = kafka.admin();
  await kafkaAdmin.connect();
  const rawTopicEnd = async () =>
    (await kafkaAdmin.fetchTopicOffsets(TOPICS.raw)).reduce((sum, p) => sum + Number(p.offset), 0);

  const main = await createTenant(admin, "main");
  const others = await Promise.all(
    Array.from({ length: cfg.tenants - 1 }, (_, i) => createTenant(admin, `t${i}`)),
  );
  const hot = await createTenant(admin, "hot");
  const e2eTenants = [main, ...others];
  const allBusinesses = new Set([...e2eTenants, hot].map((tenant) => tenant.businessId));
  const apiUrl = `http://127.0.0.1:${cfg.apiPort}`;
  const stack = stackPids();
  const results: BenchResults = {};
  const phases: Record<string, Phase> = {};
  let currentSampler: Sampler | undefined;
  /** Load generators join the sampled processes of the phase they run in. */
  const onLoadSpawn = (pid: number) => currentSampler?.add("load", pid);
  let recordSize: number | undefined;

  const startApi = (name: string) =>
    startBenchService({
      name,
      entry: "services/ingest-api/src/main.ts",
      env: {
        DATABASE_URL: withApplicationName(env.DATABASE_URL!, "bench-ingest-api"),
        INGEST_PORT: String(cfg.apiPort),
        // Its own instance group, so the rate-limit share is 1/1 whatever else runs on the shared stack.
        INGEST_INSTANCE_GROUP: `bench-${runId}`,
        RATE_LIMIT_PLANS: JSON.stringify({ [BENCH_PLAN]: BENCH_PLAN_LIMIT }),
      },
      healthUrl: `${apiUrl}/readyz`,
      logFile: join(logDir, `bench-${runId}-api.log`),
      profileDir: cfg.profile ? profileDir : undefined,
    });
  const workerGroups = new Map<BenchService, string>();
  const startWorker = async (name: string) => {
    // A fresh group at the topic's end: it applies what this scenario sends, not the shared topic's backlog.
    const groupId = await consumerGroupAtTopicEnd(brokers, TOPICS.raw, "bench-worker");
    const worker = await startBenchService({
      name,
      entry: "services/resolver-worker/src/main.ts",
      env: {
        DATABASE_URL: withApplicationName(env.DATABASE_URL!, "bench-resolver-worker"),
        WORKER_PORT: String(cfg.workerPort),
        WORKER_GROUP_ID: groupId,
      },
      // Ready once the consumer holds its assignment, so the warm-up is not spent joining the group.
      healthUrl: `http://127.0.0.1:${cfg.workerPort}/readyz`,
      logFile: join(logDir, `bench-${runId}-worker.log`),
      profileDir: cfg.profile ? profileDir : undefined,
    });
    workerGroups.set(worker, groupId);
    return worker;
  };

  /** Samples the machine while `body` runs; stops the services afterwards and summarizes their profiles. */
  async function phase<T>(name: string, services: BenchService[], body: () => Promise<T>): Promise<T> {
    const processes: Record<string, number> = {};
    for (const service of services) processes[service.name] = service.pid;
    for (const [part, pid] of Object.entries(stack)) if (part !== "postgres") processes[part] = pid;
    const sampler = new Sampler(processes, stack.postgres ? { postgres: stack.postgres } : {}, admin);
    const rawAtStart = await rawTopicEnd();
    sampler.start();
    currentSampler = sampler;
    try {
      return await body();
    } finally {
      currentSampler = undefined;
      await finishPhase(name, services, sampler, rawAtStart);
    }
  }

  async function finishPhase(
    name: string,
    services: BenchService[],
    sampler: Sampler,
    rawAtStart: number,
  ): Promise<void> {
    const sample = sampler.stop();
    // Everything produced to the shared events.raw.v1 meanwhile, by the bench and by anyone else on the stack.
    const rawTopicInPerSec = round(((await rawTopicEnd()) - rawAtStart) / sample.seconds, 0);
    const worker = services.find((service) => service.name.startsWith("worker"));
    let workerMetrics: Phase["workerMetrics"];
    if (worker) {
      const text = await fetch(`${worker.url}/metrics`).then(
        (res) => res.text(),
        () => "",
      );
      const p95 = (metric: string) => round(histogramQuantile(parseHistogram(text, metric), 0.95) * 1_000, 3);
      workerMetrics = {
        lockHoldP95Ms: p95("resolver_lock_hold_seconds"),
        lockWaitP95Ms: p95("resolver_lock_wait_seconds"),
        transactionP95Ms: p95("resolver_transaction_seconds"),
        applied: parseCounterTotal(text, "resolver_events_applied_total"),
      };
    }
    const api = services.find((service) => service.name.startsWith("api"));
    let apiMetrics: Phase["apiMetrics"];
    if (api) {
      const text = await fetch(`${api.url}/metrics`).then(
        (res) => res.text(),
        () => "",
      );
      apiMetrics = {
        produceP95Ms: round(
          histogramQuantile(
            parseHistogram(text, "ingest_kafka_produce_duration_seconds", { outcome: "ok" }),
            0.95,
          ) * 1_000,
          2,
        ),
        eventLoopLagP99Ms: round(parseGauge(text, "nodejs_eventloop_lag_p99_seconds") * 1_000, 2),
      };
    }
    const profiles: Phase["profiles"] = {};
    await Promise.all(services.map((service) => service.stop()));
    for (const service of services) {
      if (!service.profileDir) continue;
      const file = mainThreadProfile(service.profileDir);
      profiles[service.name] = file ? { ...summarizeProfileFile(file, 8), file } : "no profile written";
    }
    phases[name] = {
      sample,
      rawTopicInPerSec,
      profiles,
      ...(workerMetrics ? { workerMetrics } : {}),
      ...(apiMetrics ? { apiMetrics } : {}),
    };
  }

  const maxLoad = async (mode: MaxLoadConfig["mode"], key: string, url = apiUrl) => {
    const config: MaxLoadConfig = {
      url,
      key,
      mode,
      batchSize: 100,
      connections: mode === "batch" ? Math.max(8, Math.floor(cfg.connections / 4)) : cfg.connections,
      warmupS: cfg.warmupS,
      durationS: cfg.durationS,
    };
    const out = await runNodeChild(join(root, "bench/src/max-load.ts"), JSON.stringify(config), onLoadSpawn);
    return JSON.parse(out.trim().split("\n").at(-1)!) as {
      requestsPerSec: number;
      eventsPerSec: number;
      statuses: Record<string, number>;
      latencyMs: ReturnType<typeof summarize>;
      connections: number;
    };
  };

  // Each paced run numbers its streams after the previous runs', so its identities are new to every business.
  let nextStreamBase = 0;
  const pacedLoad = async (
    options: Partial<PacedLoadConfig> & Pick<PacedLoadConfig, "keys" | "weights" | "rate">,
  ) => {
    const streamBase = nextStreamBase;
    nextStreamBase += options.keys.length;
    const outFile = join(logDir, `bench-${runId}-paced-${Date.now()}.json`);
    const config: PacedLoadConfig = {
      url: apiUrl,
      warmupS: cfg.warmupS,
      durationS: cfg.durationS,
      mode: "track",
      batchSize: 100,
      maxInFlight: 5_000,
      outFile,
      streamBase,
      ...options,
    };
    await runNodeChild(join(root, "bench/src/paced-load.ts"), JSON.stringify(config), onLoadSpawn);
    const text = readFileSync(outFile, "utf8");
    rmSync(outFile, { force: true });
    const parsed = JSON.parse(text) as {
      records: PacedRecord[];
      dropped: number;
      maxInFlight: number;
      unanswered: number;
    };
    const measured = parsed.records.filter((record) => !record.warmup);
    const accepted = measured.filter((record) => record.status === 202);
    const statuses: Record<string, number> = {};
    for (const record of measured) statuses[record.status] = (statuses[record.status] ?? 0) + 1;
    return {
      records: parsed.records,
      accepted,
      statuses,
      dropped: parsed.dropped,
      maxInFlight: parsed.maxInFlight,
      // Open loop: latency from the time each request was due (not when it was sent).
      latencyMs: summarize(accepted.map((record) => record.doneAt - record.dueAt)),
    };
  };

  /** End-to-end latency: API 202 to the first contact.updated.v1 message caused by that event. */
  const e2eLatency = async (
    updates: ContactUpdates,
    records: PacedRecord[],
    streams: number[] | undefined,
  ) => {
    const expected = new Map<string, number>();
    for (const record of records) {
      if (record.warmup || record.status !== 202) continue;
      if (streams && !streams.includes(record.stream)) continue;
      for (const id of record.changing) expected.set(id, record.doneAt);
    }
    // Drain: wait (bounded) until every change-causing event's message arrived.
    const deadline = Date.now() + 20_000;
    const missing = () => [...expected.keys()].filter((id) => !updates.firstSeen.has(id)).length;
    while (Date.now() < deadline && missing() > 0) await sleep(250);
    // Where the time went: the outbox row's created_at is the worker's transaction time (now()), on the same
    // machine's clock, so 202 -> commit is the API + Kafka + worker part and commit -> message is Debezium's.
    const since = Math.min(...records.map((record) => record.dueAt));
    const { rows } = await admin.query<{ id: string; at: number }>(
      `SELECT payload->>'cause_event_id' AS id, extract(epoch FROM min(created_at)) * 1000 AS at
       FROM outbox WHERE created_at >= to_timestamp($1 / 1000.0) AND business_id = ANY($2::uuid[]) GROUP BY 1`,
      [since - 1_000, [...allBusinesses]],
    );
    const committedAt = new Map(rows.map((row) => [row.id, Number(row.at)]));
    const latencies: number[] = [];
    const toCommit: number[] = [];
    const commitToTopic: number[] = [];
    for (const [id, ackAt] of expected) {
      const seen = updates.firstSeen.get(id);
      if (seen !== undefined) latencies.push(seen - ackAt);
      const committed = committedAt.get(id);
      if (committed !== undefined) toCommit.push(committed - ackAt);
      if (committed !== undefined && seen !== undefined) commitToTopic.push(seen - committed);
    }
    return {
      latencyMs: summarize(latencies),
      expected: expected.size,
      unmatched: missing(),
      ackToCommitMs: summarize(toCommit),
      commitToMessageMs: summarize(commitToTopic),
    };
  };

  const errors: Record<string, string> = {};
  const limits: NonNullable<BenchResults["limits"]> = {};
  /** A failing scenario is reported and the run goes on with the next one. */
  const attempt = async (what: string, body: () => Promise<void>) => {
    try {
      await body();
    } catch (error) {
      errors[what] = (error as Error).message;
      say(`${what} failed: ${(error as Error).message}`);
    }
  };

  // Scenario 1: single events, max accepted and fixed-rate latency.
  if (cfg.only.has(1))
    await attempt("scenario 1", async () => {
      say("scenario 1: single events, maximum accepted events/s");
      const max = await phase("1 max", [await startApi("api-s1max")], () => maxLoad("track", main.key));
      say(`  ${fmt(max.eventsPerSec)} events/s, p99 ${fmt(max.latencyMs.p99)} ms`);
      say(`scenario 1: latency at a fixed ${cfg.e2eRate} req/s (open loop)`);
      const fixed = await phase("1 fixed rate", [await startApi("api-s1fixed")], () =>
        pacedLoad({ keys: [main.key], weights: [1], rate: cfg.e2eRate }),
      );
      say(
        `  p50 ${fmt(fixed.latencyMs.p50, 2)} / p95 ${fmt(fixed.latencyMs.p95, 2)} / p99 ${fmt(fixed.latencyMs.p99, 2)} ms`,
      );
      results.scenario1 = {
        max,
        fixed: {
          rate: cfg.e2eRate,
          latencyMs: fixed.latencyMs,
          statuses: fixed.statuses,
          dropped: fixed.dropped,
          maxInFlight: fixed.maxInFlight,
        },
      };
    });
  if (cfg.only.has(2))
    await attempt("scenario 2", async () => {
      say("scenario 2: batches of 100");
      const batch = await phase("2 batch", [await startApi("api-s2")], () => maxLoad("batch", main.key));
      say(`  ${fmt(batch.eventsPerSec)} events/s`);
      results.scenario2 = batch;
    });
  if (cfg.only.has(3))
    await attempt("scenario 3", async () => {
      say("scenario 3: single events with idempotency keys");
      const idem = await phase("3 idempotency", [await startApi("api-s3")], () =>
        maxLoad("idempotent", main.key),
      );
      say(`  ${fmt(idem.eventsPerSec)} events/s, p95 ${fmt(idem.latencyMs.p95)} ms`);
      results.scenario3 = idem;
    });

  if (cfg.only.has(4) || cfg.only.has(5)) {
    const updates = new ContactUpdates(kafka, allBusinesses);
    await updates.start();
    const keys = e2eTenants.map((tenant) => tenant.key);
    let baselineOthersP95: number | undefined;
    await attempt("scenario 4 latency", async () => {
      say(`scenario 4: end-to-end latency at ${cfg.e2eRate} events/s over ${keys.length} tenants`);
      const services = [await startApi("api-s4lat"), await startWorker("worker-s4lat")];
      const { load, e2e } = await phase("4 latency", services, async () => {
        const load = await pacedLoad({ keys, weights: keys.map(() => 1), rate: cfg.e2eRate });
        const all = await e2eLatency(updates, load.records, undefined);
        const othersOnly = await e2eLatency(updates, load.records, keys.map((_, i) => i).slice(1));
        return { load, e2e: { all, othersOnly } };
      });
      baselineOthersP95 = e2e.othersOnly.latencyMs.p95;
      say(
        `  e2e p50 ${fmt(e2e.all.latencyMs.p50)} / p95 ${fmt(e2e.all.latencyMs.p95)} / p99 ${fmt(e2e.all.latencyMs.p99)} ms (${e2e.all.unmatched} unmatched of ${e2e.all.expected})`,
      );
      results.scenario4Latency = {
        rate: cfg.e2eRate,
        tenants: keys.length,
        apiLatencyMs: load.latencyMs,
        statuses: load.statuses,
        e2e,
      };
    });
    if (cfg.only.has(5))
      await attempt("scenario 5", async () => {
        say(`scenario 5: hot tenant at 90% of ${cfg.e2eRate} events/s`);
        const hotKeys = [hot.key, ...others.map((tenant) => tenant.key)];
        const weights = [9 * others.length, ...others.map(() => 1)];
        const services = [await startApi("api-s5"), await startWorker("worker-s5")];
        const { e2eOthers, e2eHot, load } = await phase("5 hot tenant", services, async () => {
          const load = await pacedLoad({ keys: hotKeys, weights, rate: cfg.e2eRate });
          const e2eOthers = await e2eLatency(
            updates,
            load.records,
            others.map((_, i) => i + 1),
          );
          const e2eHot = await e2eLatency(updates, load.records, [0]);
          return { e2eOthers, e2eHot, load };
        });
        say(
          `  others' e2e p95 ${fmt(e2eOthers.latencyMs.p95)} ms (baseline ${fmt(baselineOthersP95)} ms), hot p95 ${fmt(e2eHot.latencyMs.p95)} ms`,
        );
        results.scenario5 = {
          rate: cfg.e2eRate,
          hotShare: 0.9,
          others: e2eOthers,
          hot: e2eHot,
          baselineOthersP95Ms: baselineOthersP95,
          apiLatencyMs: load.latencyMs,
          statuses: load.statuses,
        };
      });
    if (cfg.only.has(4))
      await attempt("scenario 4 throughput", async () => {
        say(`scenario 4: applied events/s with ${cfg.offeredRate} events/s offered (batches of 100)`);
        // API first: the worker's group starts at the topic's end just before the load does.
        const api = await startApi("api-s4thr");
        const worker = await startWorker("worker-s4thr");
        const services = [api, worker];
        const groupId = workerGroups.get(worker);
        const points: { x: number; applied: number; lag: number; updates: number }[] = [];
        const load = await phase("4 applied", services, async () => {
          const t0 = Date.now();
          let stop = false;
          const poll = (async () => {
            while (!stop) {
              const text = await fetch(`${worker.url}/metrics`).then(
                (res) => res.text(),
                () => "",
              );
              points.push({
                x: (Date.now() - t0) / 1_000,
                applied: parseCounterTotal(text, "resolver_events_applied_total"),
                lag: groupId ? await groupLag(kafkaAdmin, groupId) : Number.NaN,
                updates: updates.messages,
              });
              await sleep(1_000);
            }
          })();
          const load = await pacedLoad({
            keys,
            weights: keys.map(() => 1),
            rate: cfg.offeredRate / 100,
            mode: "batch",
            batchSize: 100,
          });
          stop = true;
          await poll;
          return load;
        });
        const window = points.filter(
          (point) => point.x > cfg.warmupS && point.x <= cfg.warmupS + cfg.durationS,
        );
        const first = window[0];
        const last = window.at(-1);
        const span = first && last ? last.x - first.x : Number.NaN;
        const applied = first && last ? (last.applied - first.applied) / span : Number.NaN;
        const lagSlope = slope(window.map((point) => ({ x: point.x, y: point.lag })));
        const updatesPerSec = first && last ? (last.updates - first.updates) / span : Number.NaN;
        const offered = (load.accepted.length * 100) / cfg.durationS;
        say(
          `  applied ${fmt(applied)} events/s (offered ${fmt(offered)} accepted), lag slope ${fmt(lagSlope)} /s`,
        );
        results.scenario4Throughput = {
          offeredAcceptedPerSec: offered,
          appliedPerSec: applied,
          contactUpdatesPerSec: updatesPerSec,
          lagSlopePerSec: lagSlope,
          // Lag growing means the offer exceeded what the worker applies: the applied rate is its ceiling.
          saturated: lagSlope > 0,
          points,
          statuses: load.statuses,
        };
      });
    await updates.stop();
  }

  if (cfg.only.has(6))
    await attempt("limit: Kafka producer", async () => {
      recordSize ??= await measureRecordSize(kafka, main.businessId).catch(() => undefined);
      // The mean value size the API produced in this run; without API traffic in the run, a typical one.
      const size = recordSize ?? 400;
      say(
        `limits: Kafka producer perf test (${size} B records${recordSize ? "" : ", assumed: no API traffic in this run"}, acks=all, ${partitions} partitions)`,
      );
      const topic = `bench-limit-${runId}`.toLowerCase();
      await kafkaAdmin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }] });
      const producer = await phase("6 kafka", [], () =>
        runProducerPerf({
          brokers: brokers.join(","),
          topic,
          recordSize: size,
          warmupS: cfg.warmupS,
          durationS: cfg.durationS,
          onSpawn: onLoadSpawn,
        }),
      ).finally(() => kafkaAdmin.deleteTopics({ topics: [topic] }).catch(() => {}));
      say(`  ${fmt(producer.recordsPerSec)} records/s`);
      limits.kafkaProducer = producer;
    });
  if (cfg.only.has(6))
    await attempt("limit: raw HTTP", async () => {
      say("limits: raw HTTP ceiling (a do-nothing Node server, the same autocannon load as scenario 1)");
      const port = cfg.apiPort + 19;
      const server = await startBenchService({
        name: "http-ceiling",
        entry: "bench/src/http-ceiling.ts",
        args: [String(port)],
        env: {},
        healthUrl: `http://127.0.0.1:${port}/`,
        logFile: join(logDir, `bench-${runId}-http.log`),
      });
      const http = await phase("6 http", [server], () =>
        maxLoad("track", main.key, `http://127.0.0.1:${port}`),
      );
      say(`  ${fmt(http.requestsPerSec)} requests/s`);
      limits.http = http;
    });
  if (cfg.only.has(6))
    await attempt("limit: pgbench", async () => {
      say("limits: pgbench of the resolve transaction (same identity mix, the worker's role)");
      const pgbenchTenant = await createTenant(admin, "pgbench");
      // As the worker runs: its pool size and events per transaction, from its own config schema.
      const worker = WorkerEnv.parse(stackEnv());
      const clients = worker.DATABASE_POOL_SIZE;
      const pgbench = await phase("6 pgbench", [], () =>
        runPgbench({
          databaseUrl: env.DATABASE_URL!,
          businessId: pgbenchTenant.businessId,
          clients,
          eventsPerTransaction: worker.WORKER_EVENTS_PER_TRANSACTION,
          warmupS: cfg.warmupS,
          durationS: cfg.durationS,
          scriptDir: logDir,
          onSpawn: onLoadSpawn,
        }),
      );
      say(
        `  ${fmt(pgbench.eventsPerSec)} events/s (${fmt(pgbench.tps)} transactions/s of ${pgbench.eventsPerTransaction} events, ${clients} clients)`,
      );
      limits.pgbench = pgbench;
    });
  if (Object.keys(limits).length) results.limits = limits;
  if (Object.keys(errors).length) results.errors = errors;

  await admin.end();
  await kafkaAdmin.disconnect();
  const commit = spawnSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" }).stdout.trim();
  const report = buildReport(results, phases, cpus().length);
  const json = {
    date: new Date().toISOString(),
    command: `npm run bench${process.argv.slice(2).length ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    settings: { ...cfg, only: [...cfg.only] },
    gitCommit: commit,
    // The services run from the working tree: uncommitted changes there are part of what was measured.
    gitUncommitted: spawnSync(
      "git",
      ["status", "--porcelain", "--", "services", "packages", "infra", "schemas"],
      {
        cwd: root,
        encoding: "utf8",
      },
    )
      .stdout.split("\n")
      .filter(Boolean),
    machine: {
      cores: cpus().length,
      cpuModel: cpus()[0]?.model,
      memoryMb: Math.round(totalmem() / 1024 / 1024),
      loadAverage: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number),
    },
    runtimeS: Math.round((Date.now() - started) / 1_000),
    benchPlan: { plan: BENCH_PLAN, eventsPerSecond: BENCH_PLAN_LIMIT },
    recordSize,
    results,
    phases,
    table: report,
  };
  const outDir = join(root, "bench", "results");
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "latest.json"), `${JSON.stringify(json, null, 2)}\n`);
  console.log(
    `## Benchmarks ${json.date.slice(0, 16).replace("T", " ")} UTC, ${json.machine.cores} cores, ${fmt(json.machine.memoryMb / 1024)} GiB, load ${json.machine.loadAverage.join(" ")}, \`${json.command}\` at ${commit.slice(0, 8)}\n`,
  );
  console.log(report);
  say(`done in ${json.runtimeS} s; bench/results/latest.json written`);
}

/**
 * The services' database URL with an application_name of the bench's own (pg lets the URL's parameters win over
 * the pool's option), so pg_stat_activity tells the bench's backends from other services on the shared stack.
 */
function withApplicationName(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set("application_name", name);
  return parsed.toString();
}

/** Messages between a group's committed offsets and the ends of events.raw.v1. */
async function groupLag(admin: ReturnType<Kafka["admin"]>, groupId: string): Promise<number> {
  const [ends, committed] = await Promise.all([
    admin.fetchTopicOffsets(TOPICS.raw),
    admin.fetchOffsets({ groupId, topics: [TOPICS.raw] }),
  ]);
  const at = new Map(committed[0]?.partitions.map((p) => [p.partition, Number(p.offset)]));
  return ends.reduce(
    (lag, end) => lag + Math.max(0, Number(end.offset) - Math.max(0, at.get(end.partition) ?? 0)),
    0,
  );
}

/** Mean size of the values the API produced for `businessId` (the record size of the Kafka limit). */
async function measureRecordSize(kafka: Kafka, businessId: string): Promise<number | undefined> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(TOPICS.raw);
  await admin.disconnect();
  const consumer = kafka.consumer({ groupId: `bench-size-${randomUUID().slice(0, 8)}`, maxWaitTimeInMs: 50 });
  const sizes: number[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.raw });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ message }) => {
      if (message.key?.toString().startsWith(businessId) && message.value) sizes.push(message.value.length);
    },
  });
  for (const { partition, offset } of ends) {
    consumer.seek({ topic: TOPICS.raw, partition, offset: String(Math.max(0, Number(offset) - 2_000)) });
  }
  const deadline = Date.now() + 10_000;
  while (sizes.length < 200 && Date.now() < deadline) await sleep(200);
  await consumer.disconnect();
  return sizes.length ? Math.round(sizes.reduce((a, b) => a + b, 0) / sizes.length) : undefined;
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    say(`${signal}: stopping the services the bench started`);
    void stopAllServices().finally(() => process.exit(130));
  });
}

main()
  .catch((error) => {
    say(`failed: ${(error as Error).stack ?? error}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await stopAllServices();
    process.exit();
  });
