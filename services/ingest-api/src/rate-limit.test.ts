import { describe, expect, it } from "vitest";
import { RateLimiter, rateLimitHeaders } from "./rate-limit.ts";

describe("RateLimiter", () => {
  it("allows a burst of one second's worth, then refuses with the wait until the next event fits", () => {
    let now = 0;
    const limiter = new RateLimiter(
      () => 1,
      () => now,
    );
    for (let i = 0; i < 20; i++) expect(limiter.take("u", 20, 1).allowed).toBe(true);
    const refused = limiter.take("u", 20, 1);
    expect(refused).toMatchObject({ allowed: false, limit: 20, remaining: 0, retryAfterSeconds: 1 });
    now += 100; // refills 2 events
    expect(limiter.take("u", 20, 2).allowed).toBe(true);
    expect(limiter.take("u", 20, 1).allowed).toBe(false);
    expect(limiter.take("v", 20, 1).allowed).toBe(true);
  });

  it("counts each event of a batch, all or nothing", () => {
    const limiter = new RateLimiter(
      () => 1,
      () => 0,
    );
    expect(limiter.take("u", 20, 21).allowed).toBe(false);
    expect(limiter.take("u", 20, 20).allowed).toBe(true);
  });

  it("enforces only this instance's share of the limit, and reports the cluster-wide figures", () => {
    let share = 0.5;
    const limiter = new RateLimiter(
      () => share,
      () => 0,
    );
    const decisions = Array.from({ length: 12 }, () => limiter.take("u", 20, 1));
    expect(decisions.filter((d) => d.allowed)).toHaveLength(10);
    expect(decisions[0]).toMatchObject({ limit: 20, remaining: 18 });
    share = 1;
    expect(limiter.take("w", 20, 20).allowed).toBe(true);
  });

  it("answers with Retry-After and RateLimit headers", () => {
    const headers = rateLimitHeaders({ allowed: false, limit: 20, remaining: 0, retryAfterSeconds: 2 });
    expect(headers).toMatchObject({
      "Retry-After": "2",
      RateLimit: "limit=20, remaining=0, reset=2",
      "RateLimit-Policy": "20;w=1",
    });
    expect(
      rateLimitHeaders({ allowed: true, limit: 20, remaining: 5, retryAfterSeconds: 0 })["Retry-After"],
    ).toBeUndefined();
  });
});
