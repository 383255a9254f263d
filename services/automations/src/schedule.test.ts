import { describe, expect, it } from "vitest";
import { SVIX_SCHEDULE_MS } from "./env.ts";
import { nextDelayMs, retryAfterMs } from "./schedule.ts";

describe("retry schedule", () => {
  it("follows Svix's schedule with jitter, then gives up", () => {
    expect(SVIX_SCHEDULE_MS).toEqual([
      5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
    ]);
    expect(nextDelayMs(SVIX_SCHEDULE_MS, 0, 0.1, undefined, () => 0)).toBe(4_500);
    expect(nextDelayMs(SVIX_SCHEDULE_MS, 0, 0.1, undefined, () => 1)).toBe(5_500);
    expect(nextDelayMs(SVIX_SCHEDULE_MS, 6, 0, undefined)).toBe(36_000_000);
    expect(nextDelayMs(SVIX_SCHEDULE_MS, 7, 0.1)).toBeUndefined();
  });

  it("honours Retry-After (seconds or a date) when it asks for longer, up to a day", () => {
    expect(nextDelayMs([5_000], 0, 0, 60_000)).toBe(60_000);
    expect(nextDelayMs([5_000], 0, 0, 1_000)).toBe(5_000);
    expect(nextDelayMs([5_000], 0, 0, 10 * 86_400_000)).toBe(86_400_000);
    expect(retryAfterMs("120")).toBe(120_000);
    expect(retryAfterMs(new Date(Date.now() + 30_000).toUTCString())! / 1000).toBeGreaterThan(28);
    expect(retryAfterMs("soon")).toBeUndefined();
    expect(retryAfterMs(undefined)).toBeUndefined();
  });
});
