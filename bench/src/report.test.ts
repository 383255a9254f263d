import { describe, expect, it } from "vitest";
import {
  type BenchResults,
  buildReport,
  cpuPerEventTable,
  fmt,
  likelyLimit,
  markdownTable,
  ratio,
  verdict,
} from "./report.ts";
import type { SampleReport } from "./sampler.ts";
import { summarize } from "./stats.ts";

describe("formatting", () => {
  it("formats figures, ratios and verdicts", () => {
    expect(fmt(12_345.6)).toBe("12,346");
    expect(fmt(1.23456, 2)).toBe("1.23");
    expect(fmt(Number.NaN)).toBe("n/a");
    expect(ratio(50, 200)).toBe("0.25");
    expect(ratio(50, 0)).toBe("n/a");
    expect(verdict(9, 10, "lower")).toBe("met");
    expect(verdict(9, 10, "higher")).toBe("not met");
  });

  it("pads a Markdown table and escapes pipes", () => {
    expect(markdownTable(["a", "b"], [["x|y", "1"]])).toBe(
      ["| a    | b   |", "| ---- | --- |", "| x\\|y | 1   |"].join("\n"),
    );
  });
});

describe("buildReport", () => {
  const sample: SampleReport = {
    seconds: 20,
    processes: {
      "api-s2": { pid: 1, maxRssMb: 120, cpuCores: 0.9 },
      postgres: { pid: 2, maxRssMb: 300, cpuCores: 0.2 },
    },
    machineBusyCores: 1.8,
    loadAverage1m: [2.5, 3],
    pgWaits: { "ingest-api CPU": 0.5 },
    pgActiveBackendsMean: 1,
  };
  const results: BenchResults = {
    scenario2: {
      requestsPerSec: 600,
      eventsPerSec: 60_000,
      statuses: { 202: 12_000 },
      latencyMs: summarize([1, 2]),
      connections: 16,
    },
    limits: { kafkaProducer: { recordsPerSec: 120_000, recordSize: 360, windows: [] } },
  };

  it("puts each figure beside its limit, the ratio and the target", () => {
    const report = buildReport(results, {
      "2": { sample, rawTopicInPerSec: 61_000, profiles: { "api-s2": "no profile written" } },
    });
    const row = report.split("\n").find((line) => line.startsWith("| 2 batch"));
    expect(row).toMatch(/60,000 +\| Kafka 120,000 rec\/s +\| 0\.50 +\| >= 50,000: met/);
    expect(report).toContain("| 6 limit");
    expect(report).toMatch(/\| 2 +\| 120 MB \/ 0\.90 +\| 300 MB \/ 0\.20/);
    expect(report).toContain("ingest-api CPU 50%");
    expect(report).toMatch(
      /\| 2 +\| api CPU \(one event loop\) +\| api 0\.90, postgres 0\.20 +\| 61,000 +\|/,
    );
  });

  it("prints the segments rows with their targets (issue 16)", () => {
    const report = buildReport(
      {
        segmentsBackfill: { events: 1_000_000, contacts: 100_000, seconds: 13.2, members: 12_498 },
        segmentsLatency: {
          rate: 1_000,
          segmentsPerBusiness: 50,
          latencyMs: summarize([900, 1_000, 3_000]),
          evaluatedMs: summarize([500, 600]),
          streamedMs: summarize([300, 400]),
          entries: 3,
          contactUpdated: {
            latencyMs: summarize([100, 200, 300]),
            expected: 3,
            unmatched: 0,
            ackToCommitMs: summarize([50]),
            commitToMessageMs: summarize([50]),
          },
        },
      },
      {},
    );
    expect(report).toMatch(
      /\| 8 segments +\| backfill of one segment over 1,000,000 .*\| 13\.20 .*1 M events <= 60 s: met/,
    );
    expect(report).toMatch(/\| 8 segments +\| 202 -> segment\.membership\.v1 entered .*p95 < 2 s: not met/);
    expect(report).toMatch(
      /\| 8 segments +\| of which 202 -> evaluated \/ evaluated -> on the topic, p95 ms +\| 600 \/ 400/,
    );
    expect(report).toMatch(
      /\| 8 segments +\| the same events' 202 -> contact\.updated\.v1 .*\(3 of 3 matched\).*p95 < 500 ms: met/,
    );
  });

  it("sets the Postgres cost per applied event beside pgbench and the rows alone, and names the accepted rate", () => {
    const e2e = {
      latencyMs: summarize([100, 200]),
      expected: 2,
      unmatched: 0,
      ackToCommitMs: summarize([10]),
      commitToMessageMs: summarize([90]),
    };
    const cores = (postgres: number): SampleReport => ({
      ...sample,
      processes: { postgres: { pid: 2, maxRssMb: 300, cpuCores: postgres } },
    });
    const pg = (eventsPerSec: number) => ({
      tps: eventsPerSec / 50,
      eventsPerSec,
      eventsPerTransaction: 50,
      meanLatencyMs: 10,
      clients: 8,
      windows: [],
    });
    const report = buildReport(
      {
        scenario4LatencyHigh: {
          rate: 2_500,
          tenants: 10,
          apiLatencyMs: summarize([5]),
          statuses: { 202: 2 },
          e2e: { all: e2e, othersOnly: e2e },
        },
        scenario4Throughput: {
          offeredAcceptedPerSec: 8_000,
          appliedPerSec: 3_000,
          contactUpdatesPerSec: 1_500,
          lagSlopePerSec: 5_000,
          saturated: true,
          points: [],
          statuses: { 202: 1 },
        },
        limits: { pgbench: pg(5_000), pgbenchFloor: pg(15_000) },
      },
      {
        "4 applied": { sample: cores(0.9), rawTopicInPerSec: 8_000, profiles: {} },
        "4 latency high": { sample: cores(0.9), rawTopicInPerSec: 1_800, profiles: {} },
        "6 pgbench": { sample: cores(1.5), rawTopicInPerSec: 0, profiles: {} },
        "6 pgbench floor": { sample: cores(1.2), rawTopicInPerSec: 0, profiles: {} },
      },
    );
    // 0.9 cores / 3,000 applied/s = 300 µs; pgbench 1.5 / 5,000 = 300; the rows alone 1.2 / 15,000 = 80
    expect(report).toMatch(
      /Postgres CPU µs per applied event \(saturated run\) +\| 300 +\| pgbench 300 µs\/event; its rows alone 80 +\|/,
    );
    expect(report).toMatch(
      /\| 6 limit +\| pgbench of the same rows written directly.*\| 15,000 events\/s +\|/,
    );
    expect(report).toContain("at 2,500 events/s offered (1,800/s accepted) (2 of 2 matched)");
  });

  it("says n/a when a limit is missing", () => {
    const report = buildReport({ scenario2: results.scenario2 }, {});
    expect(report).toMatch(/\| 2 batch.*\| n\/a +\|/);
  });
});

describe("likelyLimit", () => {
  const base: SampleReport = {
    seconds: 20,
    processes: {
      "worker-s4": { pid: 1, maxRssMb: 100, cpuCores: 0.2 },
      postgres: { pid: 2, maxRssMb: 300, cpuCores: 0.9 },
    },
    machineBusyCores: 1.2,
    loadAverage1m: [1],
    pgWaits: {
      "bench-resolver-worker LWLock:WALWrite": 0.45,
      "bench-resolver-worker CPU": 0.3,
      "bench-resolver-worker IO:WALSync": 0.1,
      "resolver-worker LWLock:WALWrite": 0.15,
    },
    pgActiveBackendsMean: 4,
  };

  it("names WAL flush waits, not Postgres's many processes", () => {
    expect(likelyLimit({ sample: base, rawTopicInPerSec: 0, profiles: {} }, 2)).toBe(
      "Postgres WAL flush at commit (65% of its active backends)",
    );
  });

  it("ignores other services' backends and names slow Kafka acknowledgements", () => {
    const sample = {
      ...base,
      pgWaits: { "resolver-worker LWLock:WALWrite": 0.9 },
    };
    expect(
      likelyLimit(
        { sample, rawTopicInPerSec: 0, profiles: {}, apiMetrics: { produceP95Ms: 80, eventLoopLagP99Ms: 3 } },
        2,
      ),
    ).toBe("Kafka acknowledgements (produce p95 80 ms)");
  });

  it("names Postgres CPU when the bench's backends run rather than wait", () => {
    const sample = {
      ...base,
      pgWaits: { "bench-resolver-worker CPU": 0.7, "bench-resolver-worker LWLock:WALWrite": 0.3 },
    };
    expect(likelyLimit({ sample, rawTopicInPerSec: 0, profiles: {} }, 2)).toBe(
      "Postgres CPU (0.90 cores, 70% of its active backends on CPU)",
    );
  });

  it("falls back to a saturated machine", () => {
    const sample = { ...base, pgWaits: {}, machineBusyCores: 1.95 };
    expect(likelyLimit({ sample, rawTopicInPerSec: 0, profiles: {} }, 2)).toBe(
      "machine CPU (1.95 of 2 cores busy)",
    );
  });
});

describe("cpuPerEventTable", () => {
  it("divides each process's CPU by the phase's events, totals the pipeline and leaves the clients out", () => {
    const sample: SampleReport = {
      seconds: 10,
      processes: {
        "api-s1": { pid: 1, maxRssMb: 100, cpuCores: 0.5 },
        postgres: { pid: 2, maxRssMb: 100, cpuCores: 0.25 },
        load: { pid: 3, maxRssMb: 50, cpuCores: 0.9 },
      },
      machineBusyCores: 1.6,
      loadAverage1m: [1],
      pgWaits: {},
      pgActiveBackendsMean: 1,
    };
    const table = cpuPerEventTable({ "1 max": { sample, rawTopicInPerSec: 5_000, profiles: {} } }, (name) =>
      name.replace(/-s\d\w*$/, ""),
    );
    expect(table).toContain("api µs");
    expect(table).not.toContain("load µs");
    // 0.5 core / 5,000 events/s = 100 µs; postgres 50 µs; total 150 µs
    expect(table).toMatch(/\| 1 max +\| 5,000 +\| 100 +\| 50 +\| 150 +\|/);
  });
});
