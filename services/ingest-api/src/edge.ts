import { randomUUID } from "node:crypto";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import { TOPICS } from "@crm/kafka";
import type { RawEventV1 } from "@crm/schemas";
import type { Context, ErrorHandler, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { AppDeps } from "./app.ts";
import { type Authenticator, type Caller, Unauthorized } from "./auth.ts";
import { type AppVariables, clientAddress, requestHeader } from "./http.ts";
import { Ingest, type RateLimits } from "./ingest.ts";
import type { Metrics } from "./metrics.ts";
import { RateLimiter } from "./rate-limit.ts";

// What the API's listeners (SPEC 4's and the Segment-compatible one) share: one accept path, one way of
// authenticating with the per-address check before it, the same middleware and the same error answers.

const DEFAULT_LIMITS: RateLimits = { userPerSecond: 20, keyPerSecond: () => 5_000 };

/** The accept path of a listener, from the app's dependencies (limiter, store and producer are the shared ones). */
export function createIngest(deps: AppDeps, metrics: Metrics): Ingest {
  return new Ingest({
    producer: deps.producer,
    idempotency: deps.idempotency,
    limiter: deps.limiter ?? new RateLimiter(),
    limits: deps.limits ?? DEFAULT_LIMITS,
    logger: deps.logger,
    logHashSecret: deps.logHashSecret,
    metrics,
    encodeRawEvent: deps.encodeRawEvent ?? ((event: RawEventV1) => JSON.stringify(event)),
    rawTopic: deps.rawTopic ?? TOPICS.raw,
  });
}

/** Connection close while draining, the body deadline, the request id and the request metrics. */
export function useEdgeMiddleware(
  app: Hono<{ Variables: AppVariables }>,
  deps: AppDeps,
  metrics: Metrics,
  /** Prefix of the route label, so two listeners' routes stay apart in the metrics. */
  routePrefix = "",
): void {
  const bodyTimeoutMs = deps.bodyTimeoutMs ?? 10_000;
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
    const incoming = requestHeader(c, "x-request-id");
    const id = incoming && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    c.set("requestId", id);
    c.header("x-request-id", id);
    const stop = metrics.requestSeconds.startTimer();
    await next();
    // routePath is the matched pattern, never the raw URL, so the label set stays bounded.
    const route = c.req.routePath === "/*" ? "unmatched" : `${routePrefix}${c.req.routePath}`;
    stop({ method: c.req.method, route });
    metrics.requests.inc({ method: c.req.method, route, status: String(c.res.status) });
  });
}

/**
 * Authenticates `header` (`Bearer ...`), refusing first, with 429 and before any lookup, an address that failed
 * too often, unless the credential authenticated recently (a producer sharing the address with a flood keeps
 * working). A failure is charged to the address.
 */
export async function authenticateCaller(
  c: Context<{ Variables: AppVariables }>,
  header: string | undefined,
  authenticator: Authenticator,
  deps: AppDeps,
  metrics: Metrics,
  /** Refuse anything but an ingest key (401, charged to the address like any bad credential). */
  onlyIngestKeys = false,
): Promise<Caller> {
  const failures = deps.authFailures;
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
    if (onlyIngestKeys && !/^Bearer\s+ik_/i.test(header ?? "")) {
      throw new Unauthorized(header ? "malformed" : "missing", "a write key is an ingest key (ik_...)");
    }
    return await authenticator.authenticate(header);
  } catch (error) {
    if (error instanceof Unauthorized) {
      metrics.authFailures.inc({ reason: error.reason });
      if (failures && address !== undefined) failures.charge(address);
    }
    throw error;
  }
}

/** The one `onError` of a listener: SPEC 4's JSON error shape; dependencies down are 503 with Retry-After. */
export function edgeErrorHandler(deps: AppDeps): ErrorHandler<{ Variables: AppVariables }> {
  return (error, c) => {
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
  };
}
