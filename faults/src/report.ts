import { COUNTERS, emptyCounts, type PhaseCounts } from "./compare.ts";

/** How long each part took to recover after the fault was cleared (restart done / SIGCONT), in ms. */
export interface Recovery {
  /** Fault injected -> cleared (the outage we caused). */
  faultMs: number;
  /** Cleared -> first 2xx to a request sent after it. */
  firstAckMs: number | undefined;
  /** Cleared -> every event acknowledged before the clear has its crm_events row (worker lag back to 0). */
  appliedMs: number | undefined;
  /** Cleared -> every outbox row written before the worker caught up is on contact.updated.v1 (slot lag 0). */
  streamedMs: number | undefined;
}

export interface PhaseReport extends PhaseCounts {
  /** Requests the client did not start because too many were awaiting an answer (open loop with a cap). */
  notStarted: number;
  duplicateMessages: number;
  recovery?: Recovery;
  notes: string[];
}

const seconds = (ms: number | undefined) => (ms === undefined ? "timeout" : (ms / 1000).toFixed(1));

/** The per-fault table of the report, as Markdown. */
export function markdownTable(phases: PhaseReport[]): string {
  const header = [
    "fault",
    "sent",
    "not started",
    "keyed",
    "2xx",
    "5xx tries",
    "no-answer tries",
    "retried",
    "ack-lost",
    "dup effects",
    "dup msgs",
    "unacked applied",
    "fault s",
    "first 2xx s",
    "applied s",
    "streamed s",
  ];
  const rows = phases.map((p) => [
    p.phase,
    p.sent,
    p.notStarted,
    p.keyed,
    p.acked,
    p.status5xx,
    p.network,
    p.retried,
    p.ackLost,
    p.duplicateEffects,
    p.duplicateMessages,
    p.unackedApplied,
    p.recovery ? seconds(p.recovery.faultMs) : "-",
    p.recovery ? seconds(p.recovery.firstAckMs) : "-",
    p.recovery ? seconds(p.recovery.appliedMs) : "-",
    p.recovery ? seconds(p.recovery.streamedMs) : "-",
  ]);
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Totals over all phases (the table's last row). */
export function totalRow(phases: PhaseReport[]): PhaseReport {
  const total: PhaseReport = { ...emptyCounts("total"), notStarted: 0, duplicateMessages: 0, notes: [] };
  for (const p of phases) {
    for (const key of [...COUNTERS, "notStarted", "duplicateMessages"] as const) {
      total[key] += p[key];
    }
  }
  return total;
}
