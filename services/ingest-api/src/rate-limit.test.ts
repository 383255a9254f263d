import { describe, expect, it } from "vitest";
import { AuthFailureLimiter, RateLimiter, rateLimitHeaders } from "./rate-limit.ts";

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

describe("AuthFailureLimiter (per client address, before authentication)", () => {
  it("lets an address fail `burst` times, then refuses it until one failure's worth has refilled", () => {
    let now = 0;
    const limiter = new AuthFailureLimiter({ ratePerSecond: 10, burst: 5, now: () => now });
    for (let i = 0; i < 5; i++) {
      expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(0);
      limiter.charge("203.0.113.7");
    }
    expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(1);
    expect(limiter.retryAfterSeconds("198.51.100.1")).toBe(0);
    now += 100; // one failure's worth at 10/s
    expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(0);
    limiter.charge("203.0.113.7");
    expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(1);
  });

  it("an address that never fails is never refused, however many requests it makes", () => {
    const limiter = new AuthFailureLimiter({ ratePerSecond: 1, burst: 1, now: () => 0 });
    for (let i = 0; i < 10_000; i++) expect(limiter.retryAfterSeconds("192.0.2.1")).toBe(0);
  });

  it("failures in flight together overdraw the bucket (down to -burst), and the address waits them off", () => {
    let now = 0;
    const limiter = new AuthFailureLimiter({ ratePerSecond: 10, burst: 20, now: () => now });
    for (let i = 0; i < 100; i++) limiter.charge("203.0.113.7");
    // balance -20: 21 failures' worth to refill before the next try, 2.1 s at 10/s
    expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(3);
    now += 2_000;
    expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(1);
    now += 100;
    expect(limiter.retryAfterSeconds("203.0.113.7")).toBe(0);
  });

  it("stays bounded in memory: full buckets are forgotten first", () => {
    let now = 0;
    const limiter = new AuthFailureLimiter({ ratePerSecond: 1, burst: 2, maxAddresses: 3, now: () => now });
    for (let i = 0; i < 2; i++) limiter.charge("a");
    now += 10_000; // "a" has refilled
    for (let i = 0; i < 2; i++) limiter.charge("b");
    limiter.charge("c");
    limiter.charge("d"); // over the cap: "a" (full) goes, "b" stays refused
    expect(limiter.retryAfterSeconds("b")).toBeGreaterThan(0);
    expect(limiter.retryAfterSeconds("a")).toBe(0);
  });
});
