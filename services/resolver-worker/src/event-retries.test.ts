import { describe, expect, it } from "vitest";
import { backoffMs, EventRetries } from "./event-retries.ts";

describe("EventRetries", () => {
  const clock = () => {
    let now = 1_000_000;
    return { now: () => now, advance: (ms: number) => (now += ms) };
  };

  it("dead-letters a permanent failure at once", () => {
    const retries = new EventRetries({ maxAttempts: 5, maxRetryMs: 30_000 });
    expect(retries.failed("t|0|1", "permanent", true)).toEqual({ action: "dlq", attempts: 1, retriedMs: 0 });
    expect(retries.size).toBe(0);
  });

  it("dead-letters a statement error after maxAttempts", () => {
    const retries = new EventRetries({ maxAttempts: 3, maxRetryMs: 30_000 });
    expect(retries.failed("t|0|1", "transient", true).action).toBe("retry");
    expect(retries.failed("t|0|1", "transient", true).action).toBe("retry");
    expect(retries.failed("t|0|1", "transient", true)).toMatchObject({ action: "dlq", attempts: 3 });
  });

  it("dead-letters any failure, unavailable included, once it kept failing maxRetryMs on a live database", () => {
    const time = clock();
    const retries = new EventRetries({ maxAttempts: 1_000, maxRetryMs: 30_000 }, time.now);
    expect(retries.failed("t|0|1", "unavailable", true).action).toBe("retry");
    time.advance(29_999);
    expect(retries.failed("t|0|1", "unavailable", true).action).toBe("retry");
    time.advance(1);
    expect(retries.failed("t|0|1", "unavailable", true)).toEqual({
      action: "dlq",
      attempts: 3,
      retriedMs: 30_000,
    });
    expect(retries.failed("t|0|2", "transient", true).action).toBe("retry");
    time.advance(30_000);
    expect(retries.failed("t|0|2", "transient", true)).toMatchObject({ action: "dlq", retriedMs: 30_000 });
  });

  it("waits out a database that does not answer: no attempt counted, the clock restarts when it is back", () => {
    const time = clock();
    const retries = new EventRetries({ maxAttempts: 2, maxRetryMs: 30_000 }, time.now);
    for (let i = 0; i < 100; i++) {
      expect(retries.failed("t|0|1", "unavailable", false).action).toBe("retry");
      time.advance(10_000);
    }
    expect(retries.failed("t|0|1", "unavailable", true).action).toBe("retry");
    time.advance(29_000);
    expect(retries.failed("t|0|1", "unavailable", true).action).toBe("retry");
    // down again just before the cap: the clock starts over once it answers again
    expect(retries.failed("t|0|1", "unavailable", false).action).toBe("retry");
    expect(retries.failed("t|0|1", "unavailable", true).action).toBe("retry");
    time.advance(29_000);
    expect(retries.failed("t|0|1", "unavailable", true).action).toBe("retry");
  });

  it("forgets an event once settled, and everything on clear", () => {
    const retries = new EventRetries({ maxAttempts: 2, maxRetryMs: 30_000 });
    retries.failed("t|0|1", "transient", true);
    retries.settled("t|0|1");
    expect(retries.failed("t|0|1", "transient", true).action).toBe("retry");
    retries.failed("t|0|2", "transient", true);
    retries.clear();
    expect(retries.size).toBe(0);
  });

  it("backs off from ~100 ms to ~2 s, jittered", () => {
    for (let i = 0; i < 50; i++) {
      expect(backoffMs(1)).toBeGreaterThanOrEqual(50);
      expect(backoffMs(1)).toBeLessThanOrEqual(150);
      expect(backoffMs(100)).toBeGreaterThanOrEqual(1_000);
      expect(backoffMs(100)).toBeLessThanOrEqual(3_000);
    }
  });
});
