import { NonRetriableError } from "@crm/errors";
import { describe, expect, it } from "vitest";
import { PollTimeoutError, poll } from "./poll.ts";

describe("poll", () => {
  it("resolves with the first value other than undefined or false", async () => {
    let calls = 0;
    const value = await poll(
      "the third call",
      () => (++calls === 3 ? { calls } : calls === 1 ? false : undefined),
      {
        timeoutMs: 1_000,
        intervalMs: 1,
      },
    );
    expect(value).toEqual({ calls: 3 });
  });

  it("retries errors and names the last one when the time is up", async () => {
    const waiting = poll(
      "a dependency",
      async () => {
        throw new Error("connection refused");
      },
      { timeoutMs: 50, intervalMs: 5 },
    );
    await expect(waiting).rejects.toThrow(PollTimeoutError);
    await expect(waiting).rejects.toThrow(
      "timed out after 50 ms waiting for a dependency: Error: connection refused",
    );
  });

  it("stops at once on a NonRetriableError", async () => {
    const started = Date.now();
    const waiting = poll(
      "a process that exited",
      () => {
        throw new NonRetriableError("exited with 1");
      },
      { timeoutMs: 10_000 },
    );
    await expect(waiting).rejects.toThrow("exited with 1");
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("with throwOnTimeout false, resolves with undefined after the bound, having checked at least once", async () => {
    let calls = 0;
    const value = await poll("never", () => void calls++, { timeoutMs: 0, throwOnTimeout: false });
    expect(value).toBeUndefined();
    expect(calls).toBe(1);
  });
});
