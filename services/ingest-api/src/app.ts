import { randomUUID } from "node:crypto";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import type { EventProducer } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { createAuthenticator, type JwtOptions, Unauthorized } from "./auth.ts";
import { type AppVariables, clientAddress } from "./http.ts";
import type { IdempotencyStore } from "./idempotency.ts";
import { Ingest, type RateLimits } from "./ingest.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { type AuthFailureLimiter, RateLimiter } from "./rate-limit.ts";
import { batchRoutes } from "./routes/batch.ts";
import { trackRoutes } from "./routes/track.ts";
import type { TenantDirectory } from "./tenant-directory.ts";
import { openApiDocument } from "./track-schema.ts";

export interface AppDeps {
  producer: EventProducer;
  directory: TenantDirectory;
  idempotency: IdempotencyStore;
  jwt: JwtOptions;
  logger: Logger;
  logHashSecret: string;
  /** Value bytes of events.raw.v1 messages; defaults to plain JSON (see RawEventEncoder for the framed form). */
  encodeRawEvent?: (event: RawEventV1) => Buffer | string;
  /** Defaults: users 20 events/s (seed), ingest keys 5,000 events/s whatever the plan. */
  limits?: RateLimits;
  /** Defaults to a limiter that enforces the whole limit (one instance). */
  limiter?: RateLimiter;
  metrics?: Metrics;
  /**
   * Failed authentications allowed per client address, checked before authentication (429 past it). Unset: no
   * per-address check. Applies only to requests that came through a socket (not to `app.request()`).
   */
  authFailures?: AuthFailureLimiter;
  /** Proxies in front of the API whose X-Forwarded-For is trusted (default 0: the socket's peer is the client). */
  trustedProxyHops?: number;
  /** How long after its headers a request's body may take to arrive (default 10 s); 408 past it. */
  bodyTimeoutMs?: number;
  /** What /readyz checks besides Kafka (e.g. `postgres`); each rejects when its dependency is unreachable. */
  readinessChecks?: Record<string, () => Promise<unknown>>;
  /** True once shutdown began: /readyz turns 503 so balancers stop sending. */
  isShuttingDown?: () => boolean;
}

const DEFAULT_LIMITS: RateLimits = { userPerSecond: 20, keyPerSecond: () => 5_000 };

/** The ingest HTTP API (SPEC 4). Never listens: main.ts serves it, tests call `app.request()`. */
export function createApp(deps: AppDeps) {
  const app = new Hono<{ Variables: AppVariables }>();
  const authenticator = createAuthenticator({ jwt: deps.jwt, directory: deps.directory });
  const bodyTimeoutMs = deps.bodyTimeoutMs ?? 10_000;
  const metrics = deps.metrics ?? createMetrics();
  const ingest = new Ingest({
    producer: deps.producer,
    idempotency: deps.idempotency,
    limiter: deps.limiter ?? new RateLimiter(),
    limits: deps.limits ?? DEFAULT_LIMITS,
    logger: deps.logger,
    logHashSecret: deps.logHashSecret,
    metrics,
    encodeRawEvent: deps.encodeRawEvent ?? ((event: RawEventV1) => JSON.stringify(event)),
  });

  // While draining, every answer closes its connection: server.close() waits for open connections, and a
  // keep-alive one left idle by a finished request would otherwise hold it until INGEST_KEEP_ALIVE_TIMEOUT_MS.
  app.use(async function closeWhenDraining(c, next) {
    await next();
    if (deps.isShuttingDown?.()) c.header("Connection", "close");
  });

  // Node emits a request once its headers are in: the body's time starts now.
  app.use(async function bodyDeadline(c, next) {
    c.set("bodyDeadline", Date.now() + bodyTimeoutMs);
    await next();
  });

  app.use(async function requestId(c, next) {
    const incoming = c.req.header("x-request-id");
    const id = incoming && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    c.set("requestId", id);
    c.header("x-request-id", id);
    const stop = metrics.requestSeconds.startTimer();
    await next();
    // routePath is the matched pattern, never the raw URL, so the label set stays bounded.
    const route = c.req.routePath === "/*" ? "unmatched" : c.req.routePath;
    stop({ method: c.req.method, route });
    metrics.requests.inc({ method: c.req.method, route, status: String(c.res.status) });
  });

  app.get("/healthz", (c) => c.json({ ok: true }));

  app.get("/readyz", async (c) => {
    if (deps.isShuttingDown?.()) return c.json({ ok: false, checks: { shutting_down: false } }, 503);
    const checks: Record<string, () => Promise<unknown>> = {
      ...(deps.producer.checkReady ? { kafka: () => deps.producer.checkReady!() } : {}),
      ...deps.readinessChecks,
    };
    const results = await Promise.all(
      Object.entries(checks).map(async ([name, check]) => {
        const ok = await check().then(
          () => true,
          () => false,
        );
        return [name, ok] as const;
      }),
    );
    const ok = results.every(([, up]) => up);
    return c.json({ ok, checks: Object.fromEntries(results) }, ok ? 200 : 503);
  });

  app.get("/metrics", async (c) => {
    c.header("content-type", metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });

  const openApi = openApiDocument();
  app.get("/openapi.json", (c) => c.json(openApi));

  // An address that failed to authenticate too often is refused before its credential is looked at, unless the
  // credential is one that authenticated recently (a producer sharing the address with a flood keeps working).
  const failures = deps.authFailures;
  app.use("/v1/*", async function requireCaller(c, next) {
    const header = c.req.header("authorization");
    const address = failures ? clientAddress(c, deps.trustedProxyHops ?? 0) : undefined;
    if (failures && address !== undefined && !authenticator.verifiedRecently(header)) {
      const wait = failures.retryAfterSeconds(address);
      if (wait > 0) {
        metrics.rateLimited.inc({ caller_kind: "address" });
        throw new HttpError(429, "rate_limited", "too many failed authentications from this address", {
          headers: { "Retry-After": String(wait) },
        });
      }
    }
    try {
      c.set("caller", await authenticator.authenticate(header));
    } catch (error) {
      if (error instanceof Unauthorized) {
        metrics.authFailures.inc({ reason: error.reason });
        if (failures && address !== undefined) failures.charge(address);
      }
      throw error;
    }
    await next();
  });
  app.route("/v1", trackRoutes(ingest));
  app.route("/v1", batchRoutes(ingest));

  app.notFound((c) => c.json({ ok: false, error: { code: "not_found", message: "no such route" } }, 404));

  app.onError((error, c) => {
    if (error instanceof HttpError) {
      for (const [name, value] of Object.entries(error.details.headers ?? {})) c.header(name, value);
      const body = {
        code: error.code,
        message: error.message,
        ...(error.details.issues ? { issues: error.details.issues } : {}),
      };
      return c.json({ ok: false, error: body }, error.status as ContentfulStatusCode);
    }
    if (error instanceof DependencyUnavailableError) {
      deps.logger.warn(
        { dependency: error.dependency, request_id: c.get("requestId"), err: error.cause },
        error.message,
      );
      c.header("Retry-After", "1");
      return c.json(
        { ok: false, error: { code: "unavailable", message: `${error.dependency} is unavailable` } },
        503,
      );
    }
    deps.logger.error({ err: error, request_id: c.get("requestId") }, "unhandled error");
    return c.json({ ok: false, error: { code: "internal", message: "internal error" } }, 500);
  });

  return app;
}
