/**
 * When to try again after failed attempt number `step + 1` of a delivery: `schedule[step]` ms with +- `jitter` of
 * it at random, or later when the receiver's Retry-After asks for more (capped at a day). Undefined: the schedule
 * is exhausted, the delivery failed.
 */
export function nextDelayMs(
  schedule: readonly number[],
  step: number,
  jitter: number,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number | undefined {
  const base = schedule[step];
  if (base === undefined) return undefined;
  const jittered = Math.round(base * (1 + jitter * (2 * random() - 1)));
  return Math.max(jittered, Math.min(retryAfterMs ?? 0, 24 * 3600 * 1000));
}

/** A Retry-After header (delta seconds or an HTTP date) in ms from `now`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const text = header.trim();
  if (/^\d{1,10}$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
