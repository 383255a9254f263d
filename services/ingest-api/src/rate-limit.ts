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
