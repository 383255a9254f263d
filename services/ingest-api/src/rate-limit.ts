import type { Pool } from "@crm/db";

export interface RateDecision {
  allowed: boolean;
  /** The caller's limit in events per second across all instances (what the client is told). */
  limit: number;
  /** Events the caller may still send right now (cluster-wide estimate). */
  remaining: number;
  /** Seconds until the request would fit (0 when allowed). */
  retryAfterSeconds: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets per caller: `limit` events per second with a burst of one second's worth. Each instance
 * enforces `share()` of the limit (1/N with N live instances, see InstanceRegistry), so N instances behind a
 * balancer together allow the limit without a shared counter on the request path.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly share: () => number = () => 1,
    private readonly now: () => number = () => Date.now(),
    private readonly maxCallers = 100_000,
  ) {}

  /** Takes `cost` events from the caller's bucket, all or nothing. */
  take(caller: string, limit: number, cost: number): RateDecision {
    const share = Math.min(1, Math.max(this.share(), 0.0001));
    const rate = limit * share;
    const capacity = Math.max(rate, 1);
    const now = this.now();
    let bucket = this.buckets.get(caller);
    if (!bucket) {
      bucket = { tokens: capacity, at: now };
      if (this.buckets.size >= this.maxCallers) this.evictFull(now, rate);
      this.buckets.set(caller, bucket);
    }
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    const cluster = (tokens: number) => Math.max(0, Math.floor(tokens / share));
    if (cost <= bucket.tokens) {
      bucket.tokens -= cost;
      return { allowed: true, limit, remaining: cluster(bucket.tokens), retryAfterSeconds: 0 };
    }
    // A request bigger than the whole burst can never fit; tell the client to wait a full window.
    const missing = Math.min(cost, capacity) - bucket.tokens;
    return {
      allowed: false,
      limit,
      remaining: cluster(bucket.tokens),
      retryAfterSeconds: Math.max(1, Math.ceil(missing / rate)),
    };
  }

  /** Forgets the callers whose bucket has refilled: they behave exactly like new ones. */
  private evictFull(now: number, rate: number): void {
    for (const [caller, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * rate >= rate) this.buckets.delete(caller);
    }
    if (this.buckets.size >= this.maxCallers) this.buckets.clear();
  }
}

/**
 * Failed authentications per client address, as token buckets of `ratePerSecond` with room for `burst`. Checked
 * before authentication and charged only when it fails, so a producer whose credential is good never spends
 * any: what it bounds is the credential lookups an address can make the API do for nothing. Failures that were
 * in flight together may push a balance below zero (at most to -burst); the address then waits until it has
 * refilled to one token. Enforced per instance (not divided among instances as the caller limits are).
 */
export class AuthFailureLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly rate: number;
  private readonly burst: number;
  private readonly maxAddresses: number;
  private readonly now: () => number;

  constructor(options: {
    ratePerSecond: number;
    burst: number;
    /** Addresses remembered at once; past it, those whose bucket is full again are forgotten first. */
    maxAddresses?: number;
    now?: () => number;
  }) {
    this.rate = options.ratePerSecond;
    this.burst = Math.max(1, options.burst);
    this.maxAddresses = options.maxAddresses ?? 100_000;
    this.now = options.now ?? (() => Date.now());
  }

  /** Seconds until `address` may try to authenticate again; 0 when it may now. */
  retryAfterSeconds(address: string): number {
    const bucket = this.buckets.get(address);
    if (!bucket) return 0;
    const tokens = this.refill(bucket);
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.rate));
  }

  /** Records one failed authentication from `address`. */
  charge(address: string): void {
    let bucket = this.buckets.get(address);
    if (!bucket) {
      if (this.buckets.size >= this.maxAddresses) this.evictFull();
      bucket = { tokens: this.burst, at: this.now() };
      this.buckets.set(address, bucket);
    }
    bucket.tokens = Math.max(-this.burst, this.refill(bucket) - 1);
  }

  private refill(bucket: Bucket): number {
    const now = this.now();
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.rate);
    bucket.at = now;
    return bucket.tokens;
  }

  /** A full bucket is the same as none. */
  private evictFull(): void {
    for (const [address, bucket] of this.buckets) {
      if (this.refill(bucket) >= this.burst) this.buckets.delete(address);
    }
    if (this.buckets.size >= this.maxAddresses) this.buckets.clear();
  }
}

/** The standard headers of a rate-limit answer (draft-ietf-httpapi-ratelimit-headers, and the older trio). */
export function rateLimitHeaders(decision: RateDecision): Record<string, string> {
  const reset = decision.allowed ? 1 : decision.retryAfterSeconds;
  const headers: Record<string, string> = {
    "RateLimit-Policy": `${decision.limit};w=1`,
    RateLimit: `limit=${decision.limit}, remaining=${decision.remaining}, reset=${reset}`,
    "RateLimit-Limit": String(decision.limit),
    "RateLimit-Remaining": String(decision.remaining),
    "RateLimit-Reset": String(reset),
  };
  if (!decision.allowed) headers["Retry-After"] = String(decision.retryAfterSeconds);
  return headers;
}

/**
 * Keeps this instance registered in Postgres (`app.ingest_instances`) and knows how many instances are live, so
 * each enforces 1/N of every limit. When Postgres is unreachable the last known count stays in force.
 */
export class InstanceRegistry {
  private live = 1;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly instanceId: string,
    /** Instances of one deployment; only they share the limits. */
    private readonly group = "default",
    private readonly intervalMs = 5_000,
    private readonly onError: (error: unknown) => void = () => {},
  ) {}

  /** The fraction of each limit this instance enforces. */
  share = (): number => 1 / this.live;

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat(), this.intervalMs);
    this.timer.unref();
  }

  async beat(): Promise<number> {
    try {
      const { rows } = await this.pool.query<{ live: number }>(
        "SELECT app.ingest_instance_heartbeat($1, $2, make_interval(secs => $3)) AS live",
        [this.instanceId, this.group, (this.intervalMs * 3) / 1000],
      );
      this.live = Math.max(1, rows[0]?.live ?? 1);
    } catch (error) {
      this.onError(error);
    }
    return this.live;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.pool.query("SELECT app.ingest_instance_leave($1)", [this.instanceId]).catch(() => {});
  }
}
