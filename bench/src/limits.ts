import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot, stackDir, stackEnv } from "@crm/config";
import { kafkaCredentials } from "@crm/kafka";
import { CYCLE } from "./identity-mix.ts";

/*
 * The machine's own limits, measured in the same run as the scenarios:
 * - Kafka: org.apache.kafka.tools.ProducerPerformance (kafka-producer-perf-test) with the API's record size and
 *   acks=all, on a throwaway topic with the same partition count: the raw broker ceiling of scenarios 1-2.
 * - Postgres: pgbench running the worker's resolve transaction (resolve-contact.ts + @crm/db transactionOfOne:
 *   BEGIN, set_config of the tenant, app.resolve_contact with inlined literals, clock, COMMIT, clock; all in ONE
 *   simple-protocol message) with the same identity mix (identity-mix.ts), as the worker's role: the raw
 *   database ceiling of scenario 4.
 */

/** A progress line of either tool: seconds since its start and the rate in that interval. */
export interface RateWindow {
  atS: number;
  perSec: number;
}

/** The mean rate of the windows that ended after `warmupS` (the warm-up is left out). */
export function steadyRate(windows: readonly RateWindow[], warmupS: number): number {
  const kept = windows.filter((window) => window.atS > warmupS);
  const use = kept.length ? kept : windows;
  return use.length ? use.reduce((sum, window) => sum + window.perSec, 0) / use.length : Number.NaN;
}

/** pgbench `-P` lines: "progress: 5.0 s, 1234.5 tps, lat 6.4 ms stddev 2.1, 0 failed". */
export function parsePgbenchProgress(text: string): RateWindow[] & { latencyMs?: number[] } {
  const windows: RateWindow[] = [];
  for (const match of text.matchAll(/progress: ([\d.]+) s, ([\d.]+) tps, lat ([\d.]+) ms/g)) {
    windows.push({ atS: Number(match[1]), perSec: Number(match[2]) });
  }
  return windows;
}

/** pgbench's mean latency per window, ms (same lines). */
export function parsePgbenchLatency(text: string, warmupS: number): number {
  const values = [...text.matchAll(/progress: ([\d.]+) s, [\d.]+ tps, lat ([\d.]+) ms/g)]
    .filter((match) => Number(match[1]) > warmupS)
    .map((match) => Number(match[2]));
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : Number.NaN;
}

/**
 * ProducerPerformance's periodic lines: "123456 records sent, 24691.2 records/sec (9.42 MB/sec), 45.1 ms avg
 * latency, 210.0 ms max latency." (every 5 s). Each is one window; the time is the window's end.
 */
export function parseProducerPerfWindows(text: string, intervalS = 5): RateWindow[] & { latencyMs?: number } {
  const windows: RateWindow[] = [];
  let at = 0;
  for (const match of text.matchAll(
    /(\d+) records sent, ([\d.]+) records\/sec \([\d.]+ MB\/sec\), ([\d.]+) ms avg latency/g,
  )) {
    at += intervalS;
    void match[1];
    windows.push({ atS: at, perSec: Number(match[2]) });
  }
  return windows;
}

/** The SQL the worker sends for one transaction (@crm/db transactionOfOne): one simple-protocol message. */
function transactionMessage(tag: string, businessId: string, statement: string): string {
  return [
    `BEGIN /* ${tag} */`,
    `SELECT set_config('app.business_id', '${businessId}', true)`,
    statement,
    "SELECT extract(epoch FROM clock_timestamp())::float8 AS at",
    "COMMIT",
    "SELECT extract(epoch FROM clock_timestamp())::float8 AS at",
  ].join(" \\; ");
}

const PROPS = '{"plan":"pro","amount":42}';

/**
 * The pgbench script: the worker's transaction for the identity mix (identity-mix.ts), one compound message per
 * transaction. With one event per transaction it is resolveContact's `app.resolve_contact(...)`; with more it is
 * resolveContacts' `app.resolve_contacts('[...]'::jsonb)` with that many consecutive events of the mix, the
 * payload shaped as the worker's JSON (absent fields left out). pgbench has no string functions, so each
 * position of the mix's cycle is a branch with the identifiers spelled out around pgbench variables.
 */
export function pgbenchScript(options: {
  businessId: string;
  runTag: string;
  occurredAt: string;
  eventsPerTransaction?: number;
}): string {
  const perTransaction = Math.max(1, options.eventsPerTransaction ?? 1);
  return perTransaction === 1 ? singleEventScript(options) : chunkScript({ ...options, perTransaction });
}

function singleEventScript(options: { businessId: string; runTag: string; occurredAt: string }): string {
  const biz = options.businessId;
  const literal = (value: string | null) => (value === null ? "NULL" : `'${value}'`);
  // Event ids: unique per run, client and sequence, built from pgbench integers (decimal digits are valid hex).
  const eventId = `':cid-${options.runTag}-4000-8000-:uid'`;
  const call = (email: string | null, phone: string | null, name: string | null, kind: string) =>
    transactionMessage(
      "resolve_contact",
      biz,
      `SELECT * FROM app.resolve_contact(${[
        `'${biz}'::uuid`,
        literal(email),
        literal(phone),
        "NULL",
        literal(name),
        `${eventId}::uuid`,
        literal(`bench.${kind}`),
        `'${PROPS}'::jsonb`,
        `'${options.occurredAt}'::timestamptz`,
      ].join(", ")})`,
    );
  const email = (cycle: string, slot: string) => `b:client_id.${cycle}.${slot}@bench.example`;
  const phone = (cycle: string) => `+1:ph${cycle}`;
  return [
    "\\set seq :seq + 1",
    // The event id's first group (8 digits) and last group (12 digits).
    "\\set cid 10000000 + :client_id",
    "\\set uid 100000000000 + :seq",
    `\\set cycle :seq / ${CYCLE}`,
    `\\set slot :seq % ${CYCLE}`,
    "\\set prev :cycle - 1",
    "\\set rslot :slot - 8",
    "\\set phcycle 2000000000 + :client_id * 10000000 + :cycle",
    "\\set phprev 2000000000 + :client_id * 10000000 + :prev",
    "\\if :slot = 1",
    call(null, phone("cycle"), null, "new"),
    "\\elif :slot < 10 or :cycle = 0",
    call(email(":cycle", ":slot"), null, "Bench :client_id.:cycle.:slot", "new"),
    "\\elif :slot = 18",
    call(email(":prev", "0"), null, null, "repeat"),
    "\\elif :slot < 18",
    call(email(":prev", ":rslot"), null, null, "repeat"),
    "\\else",
    call(email(":prev", "0"), phone("prev"), null, "merge"),
    "\\endif",
    "",
  ].join("\n");
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * Chunks of `perTransaction` consecutive events of the mix. The chunks repeat every lcm(20, n) events; each of
 * those positions is one branch. Unlike the single-event script, the first cycle of each client is not special:
 * its repeats and merge name identifiers of cycle -1, which do not exist yet and are therefore created.
 */
function chunkScript(options: {
  businessId: string;
  runTag: string;
  occurredAt: string;
  perTransaction: number;
}): string {
  const n = options.perTransaction;
  const span = (CYCLE * n) / gcd(CYCLE, n);
  const transactions = span / n;
  const cyclesPerSpan = span / CYCLE;
  const lines = [
    "\\set seq :seq + 1",
    "\\set cid 10000000 + :client_id",
    "\\set uid 100000000000 + :seq",
    `\\set span :seq / ${transactions}`,
    `\\set pos :seq % ${transactions}`,
  ];
  for (let position = 0; position < transactions; position++) {
    lines.push(position === 0 ? "\\if :pos = 0" : `\\elif :pos = ${position}`);
    const events: string[] = [];
    for (let j = 0; j < n; j++) {
      const offset = position * n + j;
      const slot = offset % CYCLE;
      lines.push(
        `\\set c${j} :span * ${cyclesPerSpan} + ${Math.floor(offset / CYCLE)}`,
        `\\set p${j} :c${j} - 1`,
        `\\set h${j} 2000000000 + :client_id * 10000000 + :c${j}`,
        `\\set q${j} 2000000000 + :client_id * 10000000 + :p${j}`,
      );
      const email = (cycle: string, at: number) => `"email":"b:client_id.:${cycle}${j}.${at}@bench.example"`;
      let kind: string;
      let identity: string;
      if (slot === 1) [kind, identity] = ["new", `"phone":"+1:h${j}"`];
      else if (slot < 10)
        [kind, identity] = ["new", `${email("c", slot)},"name":"Bench :client_id.:c${j}.${slot}"`];
      else if (slot < 18) [kind, identity] = ["repeat", email("p", slot - 8)];
      else if (slot === 18) [kind, identity] = ["repeat", email("p", 0)];
      else [kind, identity] = ["merge", `${email("p", 0)},"phone":"+1:q${j}"`];
      const eventId = `:cid-${options.runTag}-4000-8${String(j).padStart(3, "0")}-:uid`;
      events.push(
        `{"event_id":"${eventId}","business_id":"${options.businessId}",${identity},"type":"bench.${kind}",` +
          `"props":${PROPS},"occurred_at":"${options.occurredAt}"}`,
      );
    }
    lines.push(
      transactionMessage(
        "resolve_contacts",
        options.businessId,
        `SELECT * FROM app.resolve_contacts('[${events.join(",")}]'::jsonb)`,
      ),
    );
  }
  lines.push("\\endif", "");
  return lines.join("\n");
}

/**
 * The floor under the resolve transaction: the rows a chunk of the mix writes, written directly by set-based
 * INSERTs and one UPDATE, with no lookup, lock or resolution logic. Per transaction of `perTransaction` events
 * (even): half are new contacts (contact, email identity, outbox row of the payload's shape and size, event row),
 * half are repeat events of those contacts (last_seen_at update, event row), close to the mix's 10 new contacts,
 * ~12 outbox rows and 20 event rows per 20 events. Same tables, indexes, RLS, WAL and Debezium publication as
 * the worker's writes: what Postgres spends storing an event, whatever the SQL that decides what to store.
 */
export function floorScript(options: { businessId: string; runTag: string; perTransaction: number }): string {
  const biz = options.businessId;
  const half = Math.max(1, Math.floor(options.perTransaction / 2));
  const ids = `SELECT g, (':cid-${options.runTag}-4000-8000-:uid' || lpad(g::text, 2, '0'))::uuid AS id, 'f${options.runTag}.:cid.:uid.' || g || '@bench.example' AS email FROM generate_series(1, ${half}) AS g`;
  // a contact.created payload of the worker's shape and size (~600 B)
  const payload = `jsonb_build_object('contact_id', n.id, 'business_id', '${biz}', 'version', 1, 'change', 'created', 'changed_fields', jsonb_build_array('email', 'identities.email', 'name'), 'contact', jsonb_build_object('email', n.email, 'name', 'Bench floor', 'first_seen_at', now(), 'last_seen_at', now()), 'identities', jsonb_build_array(jsonb_build_object('type', 'email', 'value', n.email)), 'cause_event_id', gen_random_uuid(), 'occurred_at', now())`;
  const event = (kind: string) =>
    `SELECT gen_random_uuid(), '${biz}'::uuid, n.id, 'bench.${kind}', '${PROPS}'::jsonb, jsonb_build_object('email', n.email), now() FROM n`;
  const created = [
    `WITH n AS (${ids}),`,
    `c AS (INSERT INTO crm_contacts (id, business_id, email, name, name_at, first_seen_at, last_seen_at) SELECT n.id, '${biz}', n.email, 'Bench floor', now(), now(), now() FROM n),`,
    `i AS (INSERT INTO contact_identities (business_id, type, value, contact_id) SELECT '${biz}', 'email', n.email, n.id FROM n),`,
    `o AS (INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id) SELECT 'contact', n.id::text, 'contact.created', ${payload}, '${biz}' FROM n)`,
    `INSERT INTO crm_events (id, business_id, contact_id, type, props, contact, occurred_at) ${event("new")}`,
  ].join(" ");
  const repeated = [
    // by primary key (an array, so the planner never hashes the whole table against the ids)
    `WITH n AS (UPDATE crm_contacts AS c SET last_seen_at = now() WHERE c.id = ANY (ARRAY(SELECT x.id FROM (${ids}) AS x)) RETURNING c.id, c.email)`,
    `INSERT INTO crm_events (id, business_id, contact_id, type, props, contact, occurred_at) ${event("repeat")}`,
  ].join(" ");
  return [
    "\\set seq :seq + 1",
    "\\set cid 10000000 + :client_id",
    "\\set uid 1000000000 + :seq",
    [
      "BEGIN /* floor */",
      `SELECT set_config('app.business_id', '${biz}', true)`,
      created,
      repeated,
      "COMMIT",
    ].join(" \\; "),
    "",
  ].join("\n");
}

/** PGBENCH, else the newest /usr/lib/postgresql/<v>/bin/pgbench (Debian's layout), else pgbench on PATH. */
export function pgbenchBinary(): string {
  if (process.env.PGBENCH) return process.env.PGBENCH;
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((version) => existsSync(join(base, version, "bin", "pgbench")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  return versions[0] ? join(base, versions[0], "bin", "pgbench") : "pgbench";
}

export interface PgbenchResult {
  tps: number;
  /** Events per second: transactions per second times the events each carries. */
  eventsPerSec: number;
  eventsPerTransaction: number;
  meanLatencyMs: number;
  clients: number;
  windows: RateWindow[];
}

/** Runs pgbench with the resolve (or floor) script for warmup + duration seconds and returns its steady tps. */
export async function runPgbench(options: {
  databaseUrl: string;
  businessId: string;
  clients: number;
  eventsPerTransaction: number;
  warmupS: number;
  durationS: number;
  scriptDir: string;
  /** resolve (default): the worker's transaction; floor: the same rows written directly (floorScript). */
  kind?: "resolve" | "floor";
  onSpawn?: (pid: number) => void;
}): Promise<PgbenchResult> {
  const kind = options.kind ?? "resolve";
  const script = join(options.scriptDir, `bench-${kind}.pgbench`);
  const runTag = Math.floor(Math.random() * 0xffff)
    .toString(16)
    .padStart(4, "0");
  writeFileSync(
    script,
    kind === "floor"
      ? floorScript({ businessId: options.businessId, runTag, perTransaction: options.eventsPerTransaction })
      : pgbenchScript({
          businessId: options.businessId,
          runTag,
          occurredAt: new Date().toISOString(),
          eventsPerTransaction: options.eventsPerTransaction,
        }),
  );
  const bin = pgbenchBinary();
  const args = [
    "-n",
    "-M",
    "simple",
    "-f",
    script,
    "-D",
    "seq=0",
    "-c",
    String(options.clients),
    "-j",
    "2",
    "-P",
    "1",
    "-T",
    String(options.warmupS + options.durationS),
    options.databaseUrl,
  ];
  const output = await collect(spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] }), options.onSpawn);
  if (output.code !== 0) throw new Error(`pgbench exited ${output.code}: ${output.text.slice(-1_500)}`);
  const windows = parsePgbenchProgress(output.text);
  const tps = steadyRate(windows, options.warmupS);
  return {
    tps,
    eventsPerSec: tps * options.eventsPerTransaction,
    eventsPerTransaction: options.eventsPerTransaction,
    meanLatencyMs: parsePgbenchLatency(output.text, options.warmupS),
    clients: options.clients,
    windows,
  };
}

export interface ProducerPerfResult {
  recordsPerSec: number;
  recordSize: number;
  windows: RateWindow[];
}

/**
 * Runs ProducerPerformance flat out (throughput -1) for warmup + duration seconds, then stops it; the rate is the
 * mean of its 5 s windows after the warm-up.
 */
export async function runProducerPerf(options: {
  brokers: string;
  topic: string;
  recordSize: number;
  warmupS: number;
  durationS: number;
  onSpawn?: (pid: number) => void;
}): Promise<ProducerPerfResult> {
  const lib = join(stackDir(), "lib", "kafka", "*");
  // The tools' admin principal when the stack authenticates; in a file, as the JAAS line holds '=' and spaces.
  const credentials = kafkaCredentials(stackEnv(), "admin");
  const configDir = mkdtempSync(join(tmpdir(), "bench-producer-"));
  const config = join(configDir, "producer.properties");
  writeFileSync(
    config,
    credentials
      ? [
          "security.protocol=SASL_PLAINTEXT",
          "sasl.mechanism=SCRAM-SHA-512",
          `sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${credentials.username}" password="${credentials.password}";`,
          "",
        ].join("\n")
      : "",
    { mode: 0o600 },
  );
  const args = [
    "-Xmx256m",
    `-Dlog4j2.configurationFile=${join(repoRoot(), "infra", "config", "log4j2.properties")}`,
    "-cp",
    lib,
    "org.apache.kafka.tools.ProducerPerformance",
    "--topic",
    options.topic,
    "--num-records",
    "1000000000",
    "--record-size",
    String(options.recordSize),
    "--throughput",
    "-1",
    "--producer-props",
    `bootstrap.servers=${options.brokers}`,
    "acks=all",
    "--producer.config",
    config,
  ];
  const child = spawn("java", args, { stdio: ["ignore", "pipe", "pipe"] });
  // The JVM and producer take a few seconds to start: the clock starts at its first progress line.
  let stopAfter: NodeJS.Timeout | undefined;
  const startClock = (chunk: Buffer) => {
    if (stopAfter || !chunk.toString().includes("records sent")) return;
    stopAfter = setTimeout(() => child.kill("SIGTERM"), (options.warmupS + options.durationS) * 1_000);
  };
  child.stdout.on("data", startClock);
  const giveUp = setTimeout(() => child.kill("SIGTERM"), (options.warmupS + options.durationS + 60) * 1_000);
  const output = await collect(child, options.onSpawn).finally(() =>
    rmSync(configDir, { recursive: true, force: true }),
  );
  clearTimeout(stopAfter);
  clearTimeout(giveUp);
  const windows = parseProducerPerfWindows(output.text);
  if (windows.length === 0)
    throw new Error(`ProducerPerformance printed no progress: ${output.text.slice(-1_500)}`);
  return { recordsPerSec: steadyRate(windows, options.warmupS), recordSize: options.recordSize, windows };
}

function collect(
  child: ChildProcess,
  onSpawn?: (pid: number) => void,
): Promise<{ code: number | null; text: string }> {
  if (child.pid) onSpawn?.(child.pid);
  let text = "";
  child.stdout?.on("data", (chunk) => (text += chunk));
  child.stderr?.on("data", (chunk) => (text += chunk));
  return new Promise((resolve) => {
    child.once("error", (error) => resolve({ code: -1, text: `${text}\n${error.message}` }));
    child.once("exit", (code) => resolve({ code, text }));
  });
}
