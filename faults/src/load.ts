import { sleep } from "@crm/process";
import type { LedgerEntry, TrackBody } from "./ledger.ts";

export interface LoadBusiness {
  businessId: string;
  ingestKey: string;
}

export interface LoadOptions {
  url: string;
  businesses: LoadBusiness[];
  /** Requests started per second, all businesses together. */
  ratePerSec: number;
  /** Share of requests sent with an Idempotency-Key. */
  keyedShare: number;
  /** People per business; identifiers recur across events of the same person. */
  people: number;
  run: string;
  /** How long a keyed request keeps retrying before it is recorded as failed. */
  retryForMs: number;
  /** Requests awaiting an answer beyond this are not started (the client backs off instead of piling up). */
  maxInFlight: number;
  requestTimeoutMs: number;
}

/** A small deterministic PRNG, so a run's traffic shape is reproducible from its seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const email = (person: number) => `p${person}@faults.example.com`;
const phone = (person: number) => `+1555${String(1_000_000 + person).slice(-7)}`;
const externalId = (person: number) => `acct_${person}`;

/**
 * The identifiers of one event. Most events name one person with one to three of their identifiers (so contacts
 * grow by linking, and email-only and phone-only contacts get merged later); a few cross two people (an email of
 * one with the phone or account id of another), which makes merges and external_id conflicts.
 */
export function contactFor(random: () => number, people: number): TrackBody["contact"] {
  const p = Math.floor(random() * people);
  const q = Math.floor(random() * people);
  const r = random();
  const name = random() < 0.3 ? { name: `Person ${p}` } : {};
  if (r < 0.3) return { email: email(p), ...name };
  if (r < 0.5) return { phone: phone(p) };
  if (r < 0.65) return { external_id: externalId(p), email: email(p), ...name };
  if (r < 0.8) return { email: email(p), phone: phone(p) };
  if (r < 0.9) return { external_id: externalId(p), email: email(p), phone: phone(p), ...name };
  if (r < 0.95) return { email: email(p), phone: phone(q) };
  return { external_id: externalId(q), email: email(p) };
}

/**
 * Sends a steady stream of track requests and records every one in the ledger. Keyed requests that fail (5xx,
 * 409 in flight, no answer) are retried with the same key and body until a 2xx or `retryForMs`; unkeyed ones are
 * sent once. `phase()` names the fault running when a request starts.
 */
export class LoadDriver {
  readonly ledger: LedgerEntry[] = [];
  private readonly random: () => number;
  private running = false;
  private inFlight = 0;
  private inFlightKeyed = 0;
  private skipped = 0;
  /** Requests not started because `maxInFlight` were awaiting an answer, by phase. */
  readonly skippedByPhase = new Map<string, number>();
  private loop: Promise<void> | undefined;
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly options: LoadOptions,
    private readonly phase: () => string,
    seed = 7,
  ) {
    this.random = prng(seed);
  }

  start(): void {
    this.running = true;
    this.loop = this.tick();
  }

  /** Stops starting requests and waits for the ones in flight (keyed retries included) to finish. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await Promise.all([...this.pending]);
  }

  stats() {
    return {
      started: this.ledger.length,
      inFlight: this.inFlight,
      inFlightKeyed: this.inFlightKeyed,
      skipped: this.skipped,
    };
  }

  private async tick(): Promise<void> {
    const started = Date.now();
    let issued = 0;
    while (this.running) {
      const due = Math.floor(((Date.now() - started) / 1000) * this.options.ratePerSec);
      while (issued < due) {
        issued++;
        if (this.inFlight >= this.options.maxInFlight) {
          this.skipped++;
          const phase = this.phase();
          this.skippedByPhase.set(phase, (this.skippedByPhase.get(phase) ?? 0) + 1);
          continue;
        }
        const promise = this.send();
        this.pending.add(promise);
        void promise.finally(() => this.pending.delete(promise));
      }
      await sleep(10);
    }
  }

  private async send(): Promise<void> {
    const { businesses, keyedShare, people, run } = this.options;
    const req = this.ledger.length;
    const business = businesses[Math.floor(this.random() * businesses.length)]!;
    const keyed = this.random() < keyedShare;
    const body: TrackBody = {
      type: ["page_view", "signup", "purchase", "login"][req % 4]!,
      contact: contactFor(this.random, people),
      props: { req, run },
    };
    const entry: LedgerEntry = {
      req,
      phase: this.phase(),
      businessId: business.businessId,
      ...(keyed ? { key: `faults-${run}-${req}` } : {}),
      body,
      attempts: [],
    };
    this.ledger.push(entry);
    this.inFlight++;
    if (keyed) this.inFlightKeyed++;
    try {
      await this.deliver(entry, business.ingestKey);
    } finally {
      this.inFlight--;
      if (keyed) this.inFlightKeyed--;
    }
  }

  private async deliver(entry: LedgerEntry, ingestKey: string): Promise<void> {
    const text = JSON.stringify(entry.body);
    const headers: Record<string, string> = {
      authorization: `Bearer ${ingestKey}`,
      "content-type": "application/json",
      ...(entry.key ? { "idempotency-key": entry.key } : {}),
    };
    const giveUpAt = Date.now() + this.options.retryForMs;
    for (;;) {
      const at = Date.now();
      let status: number | "network" = "network";
      let retryAfterMs = 500;
      try {
        const res = await fetch(`${this.options.url}/v1/track`, {
          method: "POST",
          headers,
          body: text,
          signal: AbortSignal.timeout(this.options.requestTimeoutMs),
        });
        status = res.status;
        const answer = (await res.json().catch(() => ({}))) as { event_id?: string };
        const retryAfter = Number(res.headers.get("retry-after"));
        if (retryAfter > 0) retryAfterMs = Math.min(retryAfter * 1000, 5_000);
        entry.attempts.push({ at, ms: Date.now() - at, status });
        if (status >= 200 && status < 300) {
          entry.outcome = "ok";
          entry.eventId = answer.event_id;
          entry.ackAt = Date.now();
          return;
        }
      } catch {
        entry.attempts.push({ at, ms: Date.now() - at, status: "network" });
      }
      // 409: the same key is still in flight (e.g. the API died holding its lease): retry after the lease.
      const retriable = status === "network" || status >= 500 || status === 409 || status === 429;
      if (!retriable) {
        entry.outcome = "rejected";
        return;
      }
      if (!entry.key || Date.now() >= giveUpAt) {
        entry.outcome = "failed";
        return;
      }
      await sleep(retryAfterMs * (0.5 + this.random()));
    }
  }
}
