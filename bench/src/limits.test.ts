import { describe, expect, it } from "vitest";
import {
  floorScript,
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

describe("pgbench script of chunked transactions", () => {
  const script = pgbenchScript({
    businessId: "b1",
    runTag: "abcd",
    occurredAt: "2026-11-27T01:00:00.000Z",
    eventsPerTransaction: 5,
  });
  const calls = script.split("\n").filter((line) => line.startsWith("BEGIN"));
  // pgbench's substitution, with every variable set to 7
  const payloads = calls.map((call) => {
    const literal = /resolve_contacts\('(.*)'::jsonb\)/.exec(call)?.[1] ?? "[]";
    return JSON.parse(literal.replace(/:([a-z_]+\d*)/g, "7")) as {
      event_id: string;
      email?: string;
      phone?: string;
      type: string;
    }[];
  });

  it("sends resolve_contacts with the worker's chunk size, one branch per position of the cycle", () => {
    expect(calls).toHaveLength(4);
    for (const call of calls) {
      expect(call).toMatch(
        /^BEGIN \/\* resolve_contacts \*\/ \\; SELECT set_config\('app\.business_id', 'b1', true\)/,
      );
      expect(call).toMatch(/\\; COMMIT \\; SELECT extract/);
    }
    expect(payloads.map((events) => events.length)).toEqual([5, 5, 5, 5]);
  });

  it("carries the same mix as the worker's load: 10 new, 9 repeats, 1 merge per 20 events", () => {
    const types = payloads.flat().map((event) => event.type);
    expect(types.filter((type) => type === "bench.new")).toHaveLength(10);
    expect(types.filter((type) => type === "bench.repeat")).toHaveLength(9);
    expect(types.filter((type) => type === "bench.merge")).toHaveLength(1);
    const merge = payloads.flat().find((event) => event.type === "bench.merge");
    expect(merge?.email && merge.phone).toBeTruthy();
    // event ids differ within a transaction (the 4th group carries the position)
    expect(new Set(payloads[0]!.map((event) => event.event_id)).size).toBe(5);
  });

  it("covers chunk sizes that do not divide the cycle", () => {
    const odd = pgbenchScript({ businessId: "b1", runTag: "abcd", occurredAt: "x", eventsPerTransaction: 3 });
    expect(odd.split("\n").filter((line) => line.startsWith("BEGIN"))).toHaveLength(20);
  });
});

describe("floor script (the rows alone)", () => {
  const script = floorScript({ businessId: "b1", runTag: "abcd", perTransaction: 50 });
  const call = script.split("\n").find((line) => line.startsWith("BEGIN")) ?? "";

  it("writes, in one tenant-scoped transaction, what half new contacts and half repeats store", () => {
    expect(call).toMatch(/^BEGIN \/\* floor \*\/ \\; SELECT set_config\('app\.business_id', 'b1', true\)/);
    expect(call).toMatch(/\\; COMMIT$/);
    for (const table of ["crm_contacts", "contact_identities", "outbox", "crm_events"])
      expect(call).toContain(`INSERT INTO ${table} `);
    expect(call.match(/generate_series\(1, 25\)/g)).toHaveLength(2);
    // repeats update by primary key only, and contact ids stay unique per client, sequence and position
    expect(call).toMatch(/UPDATE crm_contacts AS c SET last_seen_at = now\(\) WHERE c\.id = ANY \(ARRAY\(/);
    expect(call).toContain("':cid-abcd-4000-8000-:uid' || lpad(g::text, 2, '0')");
  });
});
