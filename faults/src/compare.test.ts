import { describe, expect, it } from "vitest";
import {
  compareDeliveries,
  comparePartitions,
  identityPartition,
  ledgerFindings,
  lostAcks,
} from "./compare.ts";
import type { LedgerEntry } from "./ledger.ts";
import { markdownTable, totalRow } from "./report.ts";

const entry = (req: number, over: Partial<LedgerEntry> = {}): LedgerEntry => ({
  req,
  phase: "baseline",
  businessId: "b",
  body: { type: "t", contact: {}, props: { req, run: "r" } },
  attempts: [{ at: 0, ms: 1, status: 202 }],
  outcome: "ok",
  eventId: `e${req}`,
  ackAt: 1,
  ...over,
});

describe("ledgerFindings", () => {
  it("counts an acknowledged request without an event row as lost", () => {
    const entries = [entry(1), entry(2)];
    const [counts] = ledgerFindings(entries, [{ eventId: "e1", req: 1 }]);
    expect(counts).toMatchObject({ sent: 2, acked: 2, ackLost: 1, duplicateEffects: 0 });
    expect(lostAcks(entries, [{ eventId: "e1", req: 1 }]).map((e) => e.req)).toEqual([2]);
  });

  it("counts two event rows for one request, or a row under another event id, as duplicate effects", () => {
    const [counts] = ledgerFindings(
      [entry(1), entry(2)],
      [
        { eventId: "e1", req: 1 },
        { eventId: "x1", req: 1 },
        { eventId: "x2", req: 2 },
        { eventId: "e2", req: 99 },
      ],
    );
    expect(counts).toMatchObject({ ackLost: 0, duplicateEffects: 2 });
  });

  it("counts failed attempts, retries, and unacknowledged requests that were applied anyway", () => {
    const keyed = entry(1, {
      key: "k1",
      phase: "kafka",
      attempts: [
        { at: 0, ms: 5, status: 503 },
        { at: 1, ms: 5, status: "network" },
        { at: 2, ms: 5, status: 202 },
      ],
    });
    const unkeyed = entry(2, {
      phase: "kafka",
      attempts: [{ at: 0, ms: 5, status: "network" }],
      outcome: "failed",
      eventId: undefined,
    });
    const rejected = entry(3, {
      phase: "kafka",
      attempts: [{ at: 0, ms: 1, status: 400 }],
      outcome: "rejected",
    });
    const [counts] = ledgerFindings(
      [keyed, unkeyed, rejected],
      [
        { eventId: "e1", req: 1 },
        { eventId: "u2", req: 2 },
      ],
    );
    expect(counts).toEqual({
      phase: "kafka",
      sent: 3,
      keyed: 1,
      acked: 1,
      status5xx: 1,
      network: 2,
      rejected: 1,
      retried: 1,
      ackLost: 0,
      duplicateEffects: 0,
      unackedApplied: 1,
    });
  });
});

describe("identity partitions", () => {
  const rows = (contacts: Record<string, string[]>) =>
    Object.entries(contacts).flatMap(([contactId, ids]) =>
      ids.map((id) => {
        const [type, value] = id.split(":") as [string, string];
        return { businessId: "b1", contactId, type, value };
      }),
    );

  it("are equal whatever the contact ids", () => {
    const live = identityPartition(rows({ c1: ["email:a", "phone:1"], c2: ["email:b"] }));
    const replay = identityPartition(rows({ x9: ["email:b"], x8: ["phone:1", "email:a"] }));
    expect(comparePartitions(live, replay)).toEqual({ onlyLive: [], onlyReplay: [] });
  });

  it("differ when one identity sits with another contact", () => {
    const live = identityPartition(rows({ c1: ["email:a", "phone:1"], c2: ["email:b"] }));
    const replay = identityPartition(rows({ c1: ["email:a"], c2: ["email:b", "phone:1"] }));
    const diff = comparePartitions(live, replay);
    expect(diff.onlyLive).toHaveLength(2);
    expect(diff.onlyReplay).toHaveLength(2);
  });
});

describe("compareDeliveries", () => {
  it("finds missing outbox rows, counts duplicates, and flags unknown ids", () => {
    const findings = compareDeliveries(["o1", "o2", "o3"], ["o1", "o1", "o1", "o2", "zz"]);
    expect(findings.missing).toEqual(["o3"]);
    expect(findings.duplicates).toEqual(new Map([["o1", 2]]));
    expect(findings.unknown).toEqual(["zz"]);
  });
});

describe("markdownTable", () => {
  it("prints one row per phase with recovery times in seconds, and a total", () => {
    const [counts] = ledgerFindings([entry(1)], [{ eventId: "e1", req: 1 }]);
    const phase = {
      ...counts!,
      notStarted: 4,
      duplicateMessages: 3,
      notes: [],
      recovery: { faultMs: 2_000, firstAckMs: 150, appliedMs: undefined, streamedMs: 4_321 },
    };
    const table = markdownTable([phase, totalRow([phase])]).split("\n");
    expect(table).toHaveLength(4);
    expect(table[2]).toBe(
      "| baseline | 1 | 4 | 0 | 1 | 0 | 0 | 0 | 0 | 0 | 3 | 0 | 2.0 | 0.1 | timeout | 4.3 |",
    );
    expect(table[3]).toContain("| total | 1 | 4 | 0 | 1 |");
  });
});
