/*
 * The realistic identity mix of the end-to-end scenarios and of the pgbench limit (the same shape in both):
 * a cycle of 20 events per stream (one business's sender, or one pgbench client):
 *   slots 0-9   new contacts (50%): slot 0 email only, slot 1 phone only, slots 2-9 email (+ name)
 *   slots 10-18 repeat contacts (45%): identifiers created one cycle earlier, activity only
 *   slot 19     merge (5%): the email of slot 0 and the phone of slot 1 of an earlier cycle, two contacts
 * A merge pairs identifiers created `mergeLagCycles` cycles earlier, so both contacts exist by then even though
 * they travel on different Kafka keys (each key is ordered, two keys are not).
 */

export const CYCLE = 20;
export const MIX = { newShare: 10 / CYCLE, repeatShare: 9 / CYCLE, mergeShare: 1 / CYCLE };

export type EventKind = "new" | "repeat" | "merge";
export interface BenchContact {
  email?: string;
  phone?: string;
  name?: string;
}

export function benchEmail(stream: number, cycle: number, slot: number): string {
  return `b${stream}.${cycle}.${slot}@bench.example`;
}

/**
 * A US number in E.164 that libphonenumber calls possible (10 national digits), unique per (stream, cycle) for
 * streams below 800 and cycles below 10 million.
 */
export function benchPhone(stream: number, cycle: number): string {
  return `+1${2_000_000_000 + stream * 10_000_000 + (cycle % 10_000_000)}`;
}

export function identityFor(
  stream: number,
  seq: number,
  mergeLagCycles = 1,
): { kind: EventKind; contact: BenchContact } {
  const cycle = Math.floor(seq / CYCLE);
  const slot = seq % CYCLE;
  const name = `Bench ${stream}.${cycle}.${slot}`;
  if (slot === 1) return { kind: "new", contact: { phone: benchPhone(stream, cycle) } };
  if (slot < 10) return { kind: "new", contact: { email: benchEmail(stream, cycle, slot), name } };
  if (slot < 19) {
    if (cycle === 0) return { kind: "new", contact: { email: benchEmail(stream, cycle, slot), name } };
    return { kind: "repeat", contact: { email: benchEmail(stream, cycle - 1, slot === 18 ? 0 : slot - 8) } };
  }
  const pair = cycle - mergeLagCycles;
  if (pair < 0) return { kind: "new", contact: { email: benchEmail(stream, cycle, slot), name } };
  return { kind: "merge", contact: { email: benchEmail(stream, pair, 0), phone: benchPhone(stream, pair) } };
}
