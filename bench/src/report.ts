import type { PgbenchResult, ProducerPerfResult } from "./limits.ts";
import type { ProfileSummary } from "./profile.ts";
import type { SampleReport } from "./sampler.ts";
import type { Summary } from "./stats.ts";
import { workerRows } from "./worker-rows.ts";

/** What autocannon's child (max-load.ts) reports. */
export interface MaxLoadResult {
  requestsPerSec: number;
  eventsPerSec: number;
  statuses: Record<string, number>;
  latencyMs: Summary;
  connections: number;
}

export interface E2eLatency {
  latencyMs: Summary;
  /** Change-causing events accepted in the window (each should reach contact.updated.v1). */
  expected: number;
  /** Of those, events whose message had not arrived when the drain wait ended. */
  unmatched: number;
  /**
   * API 202 to the START of the worker's transaction (the outbox row's created_at is now(), the transaction's start
   * time): API, Kafka and the worker's wait. The name is older than the finding.
   */
  ackToCommitMs: Summary;
  /**
   * The start of the worker's transaction to the message on contact.updated.v1: the transaction itself (its locks,
   * statements and COMMIT), then Debezium and Connect.
   */
  commitToMessageMs: Summary;
}

export interface BenchResults {
  scenario1?: {
    max: MaxLoadResult;
    fixed: FixedRateResult;
  };
  scenario2?: MaxLoadResult;
  scenario3?: MaxLoadResult;
  /** Keyed single events at scenario 1's fixed rate (issue 13). */
  scenario3Fixed?: FixedRateResult;
  /** Batches of 100 whose every item is keyed (issue 13). */
  scenario3KeyedBatch?: MaxLoadResult;
  scenario4Latency?: {
    rate: number;
    tenants: number;
    apiLatencyMs: Summary;
    statuses: Record<string, number>;
    e2e: { all: E2eLatency; othersOnly: E2eLatency };
  };
  /** The same at BENCH_E2E_RATE_HIGH (2,500 events/s; issue 13). */
  scenario4LatencyHigh?: BenchResults["scenario4Latency"];
  scenario4Throughput?: {
    offeredAcceptedPerSec: number;
    appliedPerSec: number;
    contactUpdatesPerSec: number;
    lagSlopePerSec: number;
    saturated: boolean;
    points: { x: number; applied: number; lag: number; updates: number }[];
    statuses: Record<string, number>;
  };
  scenario5?: {
    rate: number;
    hotShare: number;
    others: E2eLatency;
    hot: E2eLatency;
    baselineOthersP95Ms: number | undefined;
    apiLatencyMs: Summary;
    statuses: Record<string, number>;
  };
  /** Issue 17: contact.updated.v1 message -> first webhook attempt, and deliveries/s to a local receiver. */
  automations?: {
    pacedRate: number;
    firstAttemptMs: Summary;
    burst: number;
    deliveriesPerSec: number;
    /** Deliveries the consumer created per second from the burst (its side of the throughput). */
    matchedPerSec: number;
    /** CPU of the automations process per delivery of the burst, matching included (ms). */
    cpuMsPerDelivery: number;
  };
  limits?: {
    kafkaProducer?: ProducerPerfResult;
    pgbench?: PgbenchResult;
    /** pgbench of the rows the resolve transaction writes, written directly (limits.ts floorScript). */
    pgbenchFloor?: PgbenchResult;
    http?: MaxLoadResult;
  };
  /** Scenario 7 (issue 18): erase request -> all rows gone (the answer) -> `erased` on contact.updated.v1. */
  erasure?: {
    people: number;
    requestMs: Summary;
    erasedOnTopicMs: Summary;
    rowsLeft: number;
    gate: { perEventUs: number; calls: number; suppressions: number };
  };
  /** Scenario 8a (issue 16): one segment's backfill over stored events. */
  segmentsBackfill?: { events: number; contacts: number; seconds: number; members: number };
  /** Scenario 8b (issue 16): API 202 to segment.membership.v1 entered. */
  segmentsLatency?: {
    rate: number;
    segmentsPerBusiness: number;
    latencyMs: Summary;
    /** API 202 -> the service's evaluation (the value's `at`); that evaluation -> the topic. */
    evaluatedMs?: Summary;
    streamedMs?: Summary;
    entries: number;
    /** The same events' 202 -> contact.updated.v1 with the segments service running (issue 16: "cost on the ingest path"). */
    contactUpdated?: E2eLatency;
  };
  errors?: Record<string, string>;
}

/** One measured phase: what the sampler saw, the services' CPU profiles, the worker's own metrics. */
export interface Phase {
  sample: SampleReport;
  /** Events produced per second during the phase to the run's raw topic (the bench's own; its worker reads it). */
  rawTopicInPerSec: number;
  profiles: Record<string, (ProfileSummary & { file: string }) | string>;
  workerMetrics?: { lockHoldP95Ms: number; lockWaitP95Ms: number; transactionP95Ms: number; applied: number };
  /** The bench API's own view: Kafka acknowledgement p95 and event-loop delay p99 over its life (this phase). */
  apiMetrics?: { produceP95Ms: number; eventLoopLagP99Ms: number };
}

/** A Markdown table; cells are escaped for pipes, columns padded so the raw text reads as a table too. */
export function markdownTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const clean = (cell: string) => cell.replaceAll("|", "\\|").replaceAll("\n", " ");
  const all = [headers, ...rows].map((row) => headers.map((_, i) => clean(row[i] ?? "")));
  const widths = headers.map((_, i) => Math.max(3, ...all.map((row) => row[i]!.length)));
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  return [
    line(all[0]!),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...all.slice(1).map(line),
  ].join("\n");
}

/** A figure for a table: thousands separated, `digits` decimals below 100, none above; "n/a" when unknown. */
export function fmt(value: number | undefined, digits = 1): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  const decimals = Math.abs(value) >= 100 ? 0 : digits;
  return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** An open-loop run at a fixed rate: latency from each request's due time. */
export interface FixedRateResult {
  rate: number;
  latencyMs: Summary;
  statuses: Record<string, number>;
  dropped: number;
  maxInFlight: number;
}

/** `figure / limit` as a ratio with two decimals, "n/a" when either is unknown or the limit is zero. */
export function ratio(figure: number | undefined, limit: number | undefined): string {
  if (
    figure === undefined ||
    limit === undefined ||
    !Number.isFinite(figure) ||
    !Number.isFinite(limit) ||
    limit === 0
  )
    return "n/a";
  return (figure / limit).toFixed(2);
}

/** "met" / "not met" against a target, or "n/a" when the figure is unknown. */
export function verdict(value: number | undefined, target: number, better: "higher" | "lower"): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  return (better === "higher" ? value >= target : value <= target) ? "met" : "not met";
}

/** The Markdown report: scenarios beside their limits, resources per phase, bottleneck evidence per phase. */
export function buildReport(results: BenchResults, phases: Record<string, Phase>, cores = 2): string {
  const kafkaLimit: number | undefined = results.limits?.kafkaProducer?.recordsPerSec;
  const s1 = results.scenario1;
  const s2 = results.scenario2;
  const s3 = results.scenario3;
  const s4l = results.scenario4Latency;
  const s4t = results.scenario4Throughput;
  const s5 = results.scenario5;
  const pct = (summary: Summary | undefined) =>
    summary ? `${fmt(summary.p50, 2)} / ${fmt(summary.p95, 2)} / ${fmt(summary.p99, 2)}` : "n/a";
  const rows: string[][] = [];
  if (s1) {
    rows.push([
      "1 single events",
      "max accepted events/s",
      fmt(s1.max.eventsPerSec),
      `Kafka ${fmt(kafkaLimit)} rec/s`,
      ratio(s1.max.eventsPerSec, kafkaLimit),
      `>= 0.5: ${kafkaLimit ? verdict(s1.max.eventsPerSec / kafkaLimit, 0.5, "higher") : "n/a"}`,
    ]);
    rows.push([
      "1 single events",
      `latency p50/p95/p99 ms at ${fmt(s1.fixed.rate)} req/s`,
      pct(s1.fixed.latencyMs),
      "",
      "",
      `p99 < 10 ms: ${verdict(s1.fixed.latencyMs.p99, 10, "lower")}`,
    ]);
  }
  if (s2)
    rows.push([
      "2 batch of 100",
      "accepted events/s",
      fmt(s2.eventsPerSec),
      `Kafka ${fmt(kafkaLimit)} rec/s`,
      ratio(s2.eventsPerSec, kafkaLimit),
      `>= 50,000: ${verdict(s2.eventsPerSec, 50_000, "higher")}`,
    ]);
  if (s3)
    rows.push([
      "3 idempotency keys",
      "max accepted events/s (keyed singles); p95 ms",
      `${fmt(s3.eventsPerSec)}; ${fmt(s3.latencyMs.p95, 2)}`,
      `scenario 1 ${fmt(s1?.max.eventsPerSec)} events/s`,
      ratio(s3.eventsPerSec, s1?.max.eventsPerSec),
      `>= 0.8 of scenario 1: ${s1 ? verdict(s3.eventsPerSec / s1.max.eventsPerSec, 0.8, "higher") : "n/a"}`,
    ]);
  const s3f = results.scenario3Fixed;
  if (s3f)
    rows.push([
      "3 idempotency keys",
      `keyed latency p50/p95/p99 ms at ${fmt(s3f.rate)} req/s`,
      pct(s3f.latencyMs),
      s1 ? `unkeyed p99 ${fmt(s1.fixed.latencyMs.p99, 2)} ms` : "",
      s1 ? ratio(s3f.latencyMs.p99, s1.fixed.latencyMs.p99) : "",
      `p99 < 10 ms: ${verdict(s3f.latencyMs.p99, 10, "lower")}`,
    ]);
  const s3b = results.scenario3KeyedBatch;
  if (s3b)
    rows.push([
      "3b keyed batches of 100",
      "accepted events/s",
      fmt(s3b.eventsPerSec),
      `scenario 2 ${fmt(s2?.eventsPerSec)} events/s`,
      ratio(s3b.eventsPerSec, s2?.eventsPerSec),
      `>= 0.7 of scenario 2: ${s2 ? verdict(s3b.eventsPerSec / s2.eventsPerSec, 0.7, "higher") : "n/a"}`,
    ]);
  rows.push(...workerRows(results, phases));
  if (s4t)
    rows.push([
      "4 end to end",
      "contact.updated.v1 messages/s of the bench businesses (Debezium) in that window",
      fmt(s4t.contactUpdatesPerSec),
      "",
      "",
      "",
    ]);
  if (s5)
    rows.push([
      "5 hot tenant (90%)",
      "other tenants' e2e p50/p95/p99 ms",
      pct(s5.others.latencyMs),
      `no hot tenant p95 ${fmt(s5.baselineOthersP95Ms, 2)} ms`,
      ratio(s5.others.latencyMs.p95, s5.baselineOthersP95Ms),
      `<= 2x: ${s5.baselineOthersP95Ms ? verdict(s5.others.latencyMs.p95 / s5.baselineOthersP95Ms, 2, "lower") : "n/a"}`,
    ]);
  if (s5)
    rows.push([
      "5 hot tenant (90%)",
      "the hot tenant's e2e p50/p95/p99 ms",
      pct(s5.hot.latencyMs),
      "",
      "",
      "",
    ]);
  const au = results.automations;
  if (au) {
    rows.push([
      "17 automations",
      `contact.updated.v1 message -> first attempt p50/p95/p99 ms at ${fmt(au.pacedRate)} msg/s`,
      pct(au.firstAttemptMs),
      "",
      "",
      `p95 < 500 ms: ${verdict(au.firstAttemptMs.p95, 500, "lower")}`,
    ]);
    rows.push([
      "17 automations",
      `deliveries/s to a local receiver (burst of ${fmt(au.burst)})`,
      fmt(au.deliveriesPerSec),
      "",
      "",
      `>= 2,000: ${verdict(au.deliveriesPerSec, 2_000, "higher")}`,
    ]);
  }
  const sb = results.segmentsBackfill;
  if (sb)
    rows.push([
      "8 segments",
      `backfill of one segment over ${fmt(sb.events)} stored events (${fmt(sb.contacts)} contacts), s`,
      fmt(sb.seconds, 2),
      "",
      "",
      `1 M events <= 60 s: ${sb.events >= 1_000_000 ? verdict(sb.seconds, 60, "lower") : "n/a (fewer events)"}`,
    ]);
  const sl = results.segmentsLatency;
  if (sl) {
    rows.push([
      "8 segments",
      `202 -> segment.membership.v1 entered p50/p95/p99 ms at ${fmt(sl.rate)} ev/s, ${sl.segmentsPerBusiness} segments per business (${fmt(sl.entries)} entries)`,
      pct(sl.latencyMs),
      "",
      "",
      `p95 < 2 s: ${verdict(sl.latencyMs.p95, 2_000, "lower")}`,
    ]);
    if (sl.evaluatedMs && sl.streamedMs)
      rows.push([
        "8 segments",
        "of which 202 -> evaluated / evaluated -> on the topic, p95 ms",
        `${fmt(sl.evaluatedMs.p95)} / ${fmt(sl.streamedMs.p95)}`,
        "",
        "",
        "",
      ]);
    if (sl.contactUpdated)
      rows.push([
        "8 segments",
        `the same events' 202 -> contact.updated.v1 p50/p95/p99 ms, the segments service running (${sl.contactUpdated.expected - sl.contactUpdated.unmatched} of ${sl.contactUpdated.expected} matched)`,
        pct(sl.contactUpdated.latencyMs),
        "",
        "",
        `p95 < 500 ms: ${verdict(sl.contactUpdated.latencyMs.p95, 500, "lower")}`,
      ]);
  }
  const split = (name: string, e2e: E2eLatency) =>
    rows.push([
      name,
      "of which 202 -> worker transaction start / start -> message (transaction, COMMIT, Debezium), p95 ms",
      `${fmt(e2e.ackToCommitMs?.p95)} / ${fmt(e2e.commitToMessageMs?.p95)}`,
      "",
      "",
      "",
    ]);
  if (s4l) split("4 end to end", s4l.e2e.all);
  if (s5) split("5 hot tenant (90%)", s5.others);
  const erased = results.erasure;
  if (erased) {
    rows.push([
      "7 erasure",
      "erase request -> all rows gone and `erased` on the topic, p50 / p95 ms",
      `${fmt(erased.erasedOnTopicMs.p50)} / ${fmt(erased.erasedOnTopicMs.p95)}`,
      `request p95 ${fmt(erased.requestMs.p95)} ms; rows left ${erased.rowsLeft}`,
      "",
      `p95 < 5,000 ms: ${verdict(erased.erasedOnTopicMs.p95, 5_000, "lower")}`,
    ]);
    rows.push([
      "7 erasure",
      `suppression check per event (${erased.gate.suppressions} suppressions), µs`,
      fmt(erased.gate.perEventUs),
      "",
      "",
      "",
    ]);
  }
  const producer = results.limits?.kafkaProducer;
  if (producer)
    rows.push([
      "6 limit",
      `Kafka ProducerPerformance, ${producer.recordSize} B, acks=all`,
      `${fmt(producer.recordsPerSec)} rec/s`,
      "",
      "",
      "",
    ]);
  const http = results.limits?.http;
  if (http)
    rows.push([
      "6 limit",
      "raw HTTP: do-nothing Node server, scenario 1's load",
      `${fmt(http.requestsPerSec)} req/s`,
      `p99 ${fmt(http.latencyMs.p99, 2)} ms`,
      s1 ? `scenario 1 / this: ${ratio(s1.max.eventsPerSec, http.requestsPerSec)}` : "",
      `scenario 1 >= 0.4 of this: ${s1 ? verdict(s1.max.eventsPerSec / http.requestsPerSec, 0.4, "higher") : "n/a"}`,
    ]);
  const pgbench = results.limits?.pgbench;
  if (pgbench)
    rows.push([
      "6 limit",
      `pgbench of the worker's transaction (${pgbench.eventsPerTransaction} events each), ${pgbench.clients} clients`,
      `${fmt(pgbench.eventsPerSec)} events/s`,
      `${fmt(pgbench.tps)} tx/s, mean ${fmt(pgbench.meanLatencyMs, 2)} ms`,
      "",
      "",
    ]);
  const floor = results.limits?.pgbenchFloor;
  if (floor)
    rows.push([
      "6 limit",
      `pgbench of the same rows written directly, no resolution logic (${floor.eventsPerTransaction} events each: half new contacts with identity, outbox and event rows, half repeat events), ${floor.clients} clients`,
      `${fmt(floor.eventsPerSec)} events/s`,
      `${fmt(floor.tps)} tx/s, mean ${fmt(floor.meanLatencyMs, 2)} ms`,
      "",
      "",
    ]);
  const main = markdownTable(["scenario", "figure", "value", "limit (same run)", "ratio", "target"], rows);

  const names = [...new Set(Object.values(phases).flatMap((p) => Object.keys(p.sample.processes)))];
  const label = (name: string) => name.replace(/-s\d\w*$/, "");
  const columns = [...new Set(names.map(label))];
  const resourceRows = Object.entries(phases).map(([phaseName, p]) => {
    const cells = columns.map((column) => {
      const entry = Object.entries(p.sample.processes).find(([name]) => label(name) === column)?.[1];
      return entry ? `${fmt(entry.maxRssMb, 0)} MB / ${entry.cpuCores.toFixed(2)}` : "";
    });
    const load = p.sample.loadAverage1m;
    return [
      phaseName,
      ...cells,
      `${p.sample.machineBusyCores.toFixed(2)}`,
      load.length ? fmt(Math.max(...load), 2) : "n/a",
      p.workerMetrics ? fmt(p.workerMetrics.lockHoldP95Ms, 2) : "",
      p.apiMetrics ? `${fmt(p.apiMetrics.produceP95Ms, 2)} / ${fmt(p.apiMetrics.eventLoopLagP99Ms, 2)}` : "",
    ];
  });
  const resources = markdownTable(
    [
      "phase",
      ...columns.map((c) => `${c} max RSS / CPU cores`),
      "machine busy cores",
      "load 1m max",
      "lock hold p95 ms",
      "API produce p95 / loop delay p99 ms",
    ],
    resourceRows,
  );

  const bottleneckRows = Object.entries(phases).map(([phaseName, p]) => {
    const busiest = Object.entries(p.sample.processes)
      .sort((a, b) => b[1].cpuCores - a[1].cpuCores)
      .slice(0, 3)
      .map(([name, figures]) => `${label(name)} ${figures.cpuCores.toFixed(2)}`)
      .join(", ");
    const waits = Object.entries(p.sample.pgWaits)
      .slice(0, 3)
      .map(([key, share]) => `${key} ${(share * 100).toFixed(0)}%`)
      .join(", ");
    const profiles = Object.entries(p.profiles)
      .map(([name, summary]) =>
        typeof summary === "string"
          ? `${label(name)}: ${summary}`
          : `${label(name)}: ${summary.topModules
              .slice(0, 3)
              .map((m) => `${m.module} ${(m.selfShare * 100).toFixed(0)}%`)
              .join(", ")}`,
      )
      .join("; ");
    return [phaseName, likelyLimit(p, cores), busiest, fmt(p.rawTopicInPerSec), waits || "idle", profiles];
  });
  const bottlenecks = markdownTable(
    [
      "phase",
      "likely limit",
      "busiest processes (CPU cores)",
      "raw events in/s (the run's topic)",
      "Postgres active backends by wait",
      "CPU profile: top self time by module",
    ],
    bottleneckRows,
  );
  return `${main}\n\nResident memory (max VmRSS) and CPU (cores) per process, per phase:\n\n${resources}\n\nCPU per event (µs of CPU per event produced to the run's raw topic in the phase), per process and in total:\n\n${cpuPerEventTable(phases, label)}\n\nEvidence of what limits each phase:\n\n${bottlenecks}\n`;
}

/**
 * A first reading of a phase's evidence: one Node process at 3/4 of a core or more (the rest of a 2-core machine is busy too) is its own limit (one event loop);
 * Postgres backends mostly waiting on WAL means commits wait for the WAL flush; a machine with every core busy
 * and no such process is CPU-starved as a whole (shared with everything else running). Several can hold.
 */
export function likelyLimit(phase: Phase, cores: number): string {
  const reasons: string[] = [];
  for (const [name, figures] of Object.entries(phase.sample.processes)) {
    const single = !["postgres", "kafka", "connect", "registry", "load"].includes(name);
    if (single && figures.cpuCores >= 0.75)
      reasons.push(`${name.replace(/-s\d\w*$/, "")} CPU (one event loop)`);
  }
  // In end-to-end phases the worker's side decides; a slow acknowledgement only delays the API's answers there.
  if (!phase.workerMetrics && phase.apiMetrics && phase.apiMetrics.produceP95Ms >= 50)
    reasons.push(`Kafka acknowledgements (produce p95 ${phase.apiMetrics.produceP95Ms} ms)`);
  // Only the bench's own backends (and pgbench's): other services on a shared stack wait on the WAL too.
  const own = Object.entries(phase.sample.pgWaits).filter(([key]) => /^(bench-|pgbench)/.test(key));
  const ownTotal = own.reduce((sum, [, share]) => sum + share, 0);
  const wal = own
    .filter(([key]) => /WALWrite|WALSync|WALInsert/.test(key))
    .reduce((sum, [, share]) => sum + share, 0);
  if (ownTotal > 0 && wal / ownTotal >= 0.4)
    reasons.push(
      `Postgres WAL flush at commit (${((wal / ownTotal) * 100).toFixed(0)}% of its active backends)`,
    );
  const onCpu = own.filter(([key]) => key.endsWith(" CPU")).reduce((sum, [, share]) => sum + share, 0);
  const postgres = phase.sample.processes.postgres?.cpuCores ?? 0;
  if (ownTotal > 0 && onCpu / ownTotal >= 0.5 && postgres >= 0.5)
    reasons.push(
      `Postgres CPU (${postgres.toFixed(2)} cores, ${((onCpu / ownTotal) * 100).toFixed(0)}% of its active backends on CPU)`,
    );
  if (reasons.length === 0 && phase.sample.machineBusyCores >= 0.9 * cores)
    reasons.push(`machine CPU (${phase.sample.machineBusyCores.toFixed(2)} of ${cores} cores busy)`);
  return reasons.join("; ") || "none evident (load generator or rate)";
}

/**
 * CPU cost per event (issue 13): each process's CPU over the phase divided by the events the phase produced to the
 * run's raw topic. Load generators are left out of the total (they are the clients, not the pipeline).
 */
export function cpuPerEventTable(phases: Record<string, Phase>, label: (name: string) => string): string {
  const isClient = (name: string) => /load|autocannon|paced|max-load/.test(name);
  const columns = [
    ...new Set(Object.values(phases).flatMap((p) => Object.keys(p.sample.processes).map(label))),
  ].filter((c) => !isClient(c));
  const rows = Object.entries(phases).map(([phaseName, p]) => {
    const events = p.rawTopicInPerSec;
    const perEvent = (cores: number) => (events > 0 ? (cores * 1e6) / events : undefined);
    let total = 0;
    const cells = columns.map((column) => {
      const entry = Object.entries(p.sample.processes).find(([name]) => label(name) === column)?.[1];
      if (!entry) return "";
      total += entry.cpuCores;
      return fmt(perEvent(entry.cpuCores), 0);
    });
    return [phaseName, fmt(events), ...cells, fmt(perEvent(total), 0)];
  });
  return markdownTable(["phase", "events/s", ...columns.map((c) => `${c} µs`), "total µs"], rows);
}
