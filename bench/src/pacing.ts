/*
 * Open-loop pacing: request i is due at start + i / rate, whatever happened to earlier requests, and its latency
 * is measured from that due time. A slow response therefore cannot delay the requests behind it out of the
 * measurement (no coordinated omission): if the generator itself falls behind, the delay counts as latency.
 */

/** Milliseconds after the start at which request `index` (0-based) is due at `ratePerSec`. */
export function dueAt(index: number, ratePerSec: number): number {
  return (index * 1_000) / ratePerSec;
}

/** How many requests are due by `elapsedMs` after the start (the next index to send is this count). */
export function dueCount(elapsedMs: number, ratePerSec: number): number {
  return elapsedMs < 0 ? 0 : Math.floor((elapsedMs * ratePerSec) / 1_000) + 1;
}

/**
 * Picks which stream (business) sends each next request so each gets its `weights` share, spread evenly
 * (nginx's smooth weighted round robin): a stream's requests are paced too rather than bunched.
 */
export class WeightedRoundRobin {
  private readonly current: number[];
  private readonly total: number;

  constructor(private readonly weights: readonly number[]) {
    this.current = weights.map(() => 0);
    this.total = weights.reduce((sum, weight) => sum + weight, 0);
  }

  next(): number {
    let best = 0;
    for (let stream = 0; stream < this.weights.length; stream++) {
      this.current[stream]! += this.weights[stream]!;
      if (this.current[stream]! > this.current[best]!) best = stream;
    }
    this.current[best]! -= this.total;
    return best;
  }
}
