import { isAck, type LedgerEntry } from "./ledger.ts";

/** A `crm_events` row as the checker reads it: its id and the client request (`props.req`) that caused it. */
export interface AppliedEvent {
  eventId: string;
  req: number | undefined;
}

export interface PhaseCounts {
  phase: string;
  /** Logical requests first sent in this phase. */
  sent: number;
  /** Of those, keyed ones. */
  keyed: number;
  /** Requests that got a 2xx (after retries for keyed ones). */
  acked: number;
  /** HTTP attempts answered 5xx, and attempts with no answer at all. */
  status5xx: number;
  network: number;
  /** Requests whose final answer was a 4xx (409 in-flight answers are retried, not counted here). */
  rejected: number;
  /** Keyed requests that needed more than one attempt. */
  retried: number;
  /** Acknowledged (2xx) requests with no crm_events row: must be 0. */
  ackLost: number;
  /** Requests applied more than once (two crm_events rows for one request), or under another event id than acked. */
  duplicateEffects: number;
  /** Requests the client saw fail (no 2xx) that were applied anyway: allowed ("maybe" semantics), counted. */
  unackedApplied: number;
}

/** The counters of `PhaseCounts`, each starting at zero (report totals reuse the list). */
export const COUNTERS = [
  "sent",
  "keyed",
  "acked",
  "status5xx",
  "network",
  "rejected",
  "retried",
  "ackLost",
  "duplicateEffects",
  "unackedApplied",
] as const;

export function emptyCounts(phase: string): PhaseCounts {
  return { phase, ...(Object.fromEntries(COUNTERS.map((key) => [key, 0])) as Omit<PhaseCounts, "phase">) };
}

/** Per-phase comparison of the client's ledger with what the database applied. */
export function ledgerFindings(entries: LedgerEntry[], applied: AppliedEvent[]): PhaseCounts[] {
  const eventsByReq = new Map<number, string[]>();
  const appliedIds = new Set<string>();
  for (const event of applied) {
    appliedIds.add(event.eventId);
    if (event.req === undefined) continue;
    const list = eventsByReq.get(event.req) ?? [];
    list.push(event.eventId);
    eventsByReq.set(event.req, list);
  }
  const phases = new Map<string, PhaseCounts>();
  const phaseOf = (name: string) => {
    let counts = phases.get(name);
    if (!counts) {
      counts = emptyCounts(name);
      phases.set(name, counts);
    }
    return counts;
  };
  for (const entry of entries) {
    const counts = phaseOf(entry.phase);
    counts.sent++;
    if (entry.key !== undefined) counts.keyed++;
    if (entry.key !== undefined && entry.attempts.length > 1) counts.retried++;
    for (const attempt of entry.attempts) {
      if (attempt.status === "network") counts.network++;
      else if (attempt.status >= 500) counts.status5xx++;
    }
    if (entry.outcome === "rejected") counts.rejected++;
    const events = eventsByReq.get(entry.req) ?? [];
    if (events.length > 1) counts.duplicateEffects++;
    if (isAck(entry)) {
      counts.acked++;
      if (!appliedIds.has(entry.eventId)) counts.ackLost++;
      else if (events.length === 1 && events[0] !== entry.eventId) counts.duplicateEffects++;
    } else if (events.length > 0) {
      counts.unackedApplied++;
    }
  }
  return [...phases.values()];
}

/** Requests acknowledged but never applied, for the report's evidence section. */
export function lostAcks(entries: LedgerEntry[], applied: AppliedEvent[]): LedgerEntry[] {
  const ids = new Set(applied.map((e) => e.eventId));
  return entries.filter((entry) => isAck(entry) && !ids.has(entry.eventId));
}

export interface IdentityRow {
  businessId: string;
  contactId: string;
  type: string;
  value: string;
}

/**
 * The identity -> contact partition of each business, independent of contact ids: each contact becomes the sorted
 * list of its identities, and a business the sorted list of those groups.
 */
export function identityPartition(rows: IdentityRow[]): Map<string, string[]> {
  const groups = new Map<string, { businessId: string; members: string[] }>();
  for (const row of rows) {
    const id = `${row.businessId}/${row.contactId}`;
    const group = groups.get(id) ?? { businessId: row.businessId, members: [] };
    group.members.push(`${row.type}:${row.value}`);
    groups.set(id, group);
  }
  const byBusiness = new Map<string, string[]>();
  for (const { businessId, members } of groups.values()) {
    const list = byBusiness.get(businessId) ?? [];
    list.push(members.sort().join(" | "));
    byBusiness.set(businessId, list);
  }
  for (const list of byBusiness.values()) list.sort();
  return byBusiness;
}

export interface PartitionDiff {
  /** Contacts (as identity groups) found only in the live database, and only in the replay. */
  onlyLive: string[];
  onlyReplay: string[];
}

export function comparePartitions(live: Map<string, string[]>, replay: Map<string, string[]>): PartitionDiff {
  const flatten = (partition: Map<string, string[]>) => {
    const out = new Map<string, number>();
    for (const [businessId, groups] of partition) {
      for (const group of groups) {
        const key = `${businessId.slice(0, 8)} {${group}}`;
        out.set(key, (out.get(key) ?? 0) + 1);
      }
    }
    return out;
  };
  const a = flatten(live);
  const b = flatten(replay);
  const missingFrom = (from: Map<string, number>, other: Map<string, number>) =>
    [...from].flatMap(([key, n]) => Array(Math.max(0, n - (other.get(key) ?? 0))).fill(key) as string[]);
  return { onlyLive: missingFrom(a, b), onlyReplay: missingFrom(b, a) };
}

export interface DeliveryFindings {
  /** Outbox rows never seen on contact.updated.v1 (must be none). */
  missing: string[];
  /** Extra deliveries of one outbox id (at-least-once: allowed, counted), by outbox id. */
  duplicates: Map<string, number>;
  /** Messages whose `id` header matches no outbox row (must be none). */
  unknown: string[];
}

export function compareDeliveries(outboxIds: Iterable<string>, deliveredIds: string[]): DeliveryFindings {
  const seen = new Map<string, number>();
  for (const id of deliveredIds) seen.set(id, (seen.get(id) ?? 0) + 1);
  const expected = new Set(outboxIds);
  const duplicates = new Map<string, number>();
  for (const [id, n] of seen) if (n > 1) duplicates.set(id, n - 1);
  return {
    missing: [...expected].filter((id) => !seen.has(id)),
    duplicates,
    unknown: [...seen.keys()].filter((id) => !expected.has(id)),
  };
}
