import { setTimeout as wait } from "node:timers/promises";
import { NonRetriableError } from "@crm/errors";

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return wait(ms);
}

export interface PollOptions {
  /** How long to keep asking before giving up. */
  timeoutMs: number;
  /** Pause between two checks; default 200 ms. */
  intervalMs?: number;
  /** false: resolve with undefined at the timeout instead of throwing (a bounded wait that goes on regardless). */
  throwOnTimeout?: boolean;
}

/** `poll` gave up: `what` did not happen within `timeoutMs`. */
export class PollTimeoutError extends Error {
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    readonly lastError: unknown,
  ) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
    this.name = "PollTimeoutError";
  }
}

/**
 * Calls `check` until it returns something other than undefined or false, and resolves with that. An error thrown
 * by `check` counts as "not yet" (the last one is named when the time is up), except a NonRetriableError, which
 * ends the wait at once (e.g. the process being waited for has exited). Checks at least once.
 */
export async function poll<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: PollOptions & { throwOnTimeout: false },
): Promise<T | undefined>;
export async function poll<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: PollOptions,
): Promise<T>;
export async function poll<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: PollOptions,
): Promise<T | undefined> {
  const intervalMs = options.intervalMs ?? 200;
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      if (error instanceof NonRetriableError) throw error;
      lastError = error;
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(intervalMs, left));
  }
  if (options.throwOnTimeout === false) return undefined;
  throw new PollTimeoutError(what, options.timeoutMs, lastError);
}
