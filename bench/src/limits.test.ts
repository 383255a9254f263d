import { describe, expect, it } from "vitest";
import {
  parsePgbenchLatency,
  parsePgbenchProgress,
  parseProducerPerfWindows,
  pgbenchScript,
  steadyRate,
} from "./limits.ts";

describe("limit tool output", () => {
  it("reads pgbench progress and leaves the warm-up out", () => {
    const text = [
      "progress: 1.0 s, 100.0 tps, lat 9.000 ms stddev 1.0, 0 failed",
      "progress: 2.0 s, 1000.0 tps, lat 2.000 ms stddev 1.0, 0 failed",
      "progress: 3.0 s, 1200.0 tps, lat 4.000 ms stddev 1.0, 0 failed",
    ].join("\n");
    const windows = parsePgbenchProgress(text);
    expect(windows).toEqual([
      { atS: 1, perSec: 100 },
      { atS: 2, perSec: 1000 },
      { atS: 3, perSec: 1200 },
    ]);
    expect(steadyRate(windows, 1)).toBe(1100);
    expect(parsePgbenchLatency(text, 1)).toBe(3);
  });

  it("reads ProducerPerformance's periodic windows", () => {
    const text =
      "12345 records sent, 2469.0 records/sec (0.85 MB/sec), 45.1 ms avg latency, 210.0 ms max latency.\n" +
      "600000 records sent, 120000.0 records/sec (41.2 MB/sec), 80.0 ms avg latency, 300.0 ms max latency.\n";
    const windows = parseProducerPerfWindows(text);
    expect(windows).toEqual([
      { atS: 5, perSec: 2469 },
      { atS: 10, perSec: 120000 },
    ]);
    expect(steadyRate(windows, 5)).toBe(120000);
  });
});

describe("pgbench script", () => {
  const script = pgbenchScript({ businessId: "b1", runTag: "abcd", occurredAt: "2026-11-27T01:00:00.000Z" });

  it("sends the worker's transaction as one message per event", () => {
    const calls = script.split("\n").filter((line) => line.startsWith("BEGIN"));
    expect(calls).toHaveLength(5);
    for (const call of calls) {
      expect(call).toContain("SELECT set_config('app.business_id', 'b1', true)");
      expect(call).toMatch(/\\; COMMIT \\; SELECT extract\(epoch FROM clock_timestamp\(\)\)::float8 AS at$/);
      expect(call).toContain("'2026-11-27T01:00:00.000Z'::timestamptz");
    }
  });

  it("mirrors the identity mix: merges pair the previous cycle's email and phone", () => {
    expect(script).toContain("\\set slot :seq % 20");
    expect(script).toMatch(/'b:client_id\.:prev\.0@bench\.example', '\+1:phprev'.*'bench\.merge'/);
  });
});
