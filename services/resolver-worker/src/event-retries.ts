/** How a failed attempt should be handled (see `classifyFailure`). */
export type FailureKind = "unavailable" | "transient" | "permanent";

export interface RetryPolicy {
  /** Attempts failed by a statement error (the database answered) before the event is dead-lettered. */
  maxAttempts: number;
  /** How long an event may keep failing, whatever the failure, while the database answers other queries. */
  maxRetryMs: number;
}

export type RetryDecision =
  | { action: "retry"; attempts: number; delayMs: number }
  | { action: "dlq"; attempts: number; retriedMs: number };

interface Failures {
  /** Every failed attempt, outages included: drives the backoff and the DLQ's `attempts` header. */
  tries: number;
  /** Attempts the database answered with an error about this statement: bounded by maxAttempts. */
  statementErrors: number;
  /** Since when the event has kept failing while the database answered; unset while it does not answer. */
  failingLiveSince?: number;
}

/** Jittered exponential backoff: ~100 ms after the first failure, up to ~2 s (0.5x to 1.5x jitter). */
export function backoffMs(tries: number): number {
  return Math.min(2_000, 50 * 2 ** Math.min(tries, 6)) * (0.5 + Math.random());
}

/**
 * The failures of the events being retried, by event position (topic, partition, offset), remembered across
 * batches: a retried event is fetched again after its backoff, not retried in place. The consumer forgets them
 * all on a rebalance or at shutdown (the next owner starts afresh) and one by one when an event is settled.
 *
 * The rule: a permanent failure is dead-lettered at once; a statement error after `maxAttempts`; any failure,
 * "unavailable" included, once the event has kept failing for `maxRetryMs` while the database answered. An
 * outage (the database does not answer a probe either) restarts that clock and counts no attempt, so a stopped
 * database is waited out and dead-letters nothing.
 */
export class EventRetries {
  private readonly failures = new Map<string, Failures>();

  constructor(
    private readonly policy: RetryPolicy,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Records a failed attempt of event `id` and decides what comes next. `databaseAnswers`: whether the database
   * answered (true for a statement error; for "unavailable", what a probe query said).
   */
  failed(id: string, kind: FailureKind, databaseAnswers: boolean): RetryDecision {
    const now = this.now();
    const failures = this.failures.get(id) ?? { tries: 0, statementErrors: 0 };
    failures.tries++;
    if (kind !== "unavailable") failures.statementErrors++;
    if (databaseAnswers) failures.failingLiveSince ??= now;
    else failures.failingLiveSince = undefined;
    const retriedMs = failures.failingLiveSince === undefined ? 0 : now - failures.failingLiveSince;
    if (
      kind === "permanent" ||
      failures.statementErrors >= this.policy.maxAttempts ||
      (failures.failingLiveSince !== undefined && retriedMs >= this.policy.maxRetryMs)
    ) {
      this.failures.delete(id);
      return { action: "dlq", attempts: failures.tries, retriedMs };
    }
    this.failures.set(id, failures);
    return { action: "retry", attempts: failures.tries, delayMs: backoffMs(failures.tries) };
  }

  /** The event was applied (or dead-lettered for another reason): its failures no longer matter. */
  settled(id: string): void {
    this.failures.delete(id);
  }

  /** Events currently waiting for a retry. */
  get size(): number {
    return this.failures.size;
  }

  clear(): void {
    this.failures.clear();
  }
}
