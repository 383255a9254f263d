import type { Pool } from "@crm/db";
import type { EventProducer } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { Hono } from "hono";
import { createAuthenticator, type JwtOptions } from "./auth.ts";
import { authenticateCaller, createIngest, edgeErrorHandler, useEdgeMiddleware } from "./edge.ts";
import { type AppVariables, requestHeader } from "./http.ts";
import type { IdempotencyStore } from "./idempotency.ts";
import type { RateLimits } from "./ingest.ts";
import { automationsOpenApi } from "./manage-automations-schema.ts";
import { manageOpenApi } from "./manage-schema.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import type { AuthFailureLimiter, RateLimiter } from "./rate-limit.ts";
import { batchRoutes } from "./routes/batch.ts";
import { manageAutomationRoutes } from "./routes/manage-automations.ts";
import { erasureOpenApi, manageErasureRoutes } from "./routes/manage-erasure.ts";
import { manageSegmentRoutes } from "./routes/manage-segments.ts";
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
  /** Where raw events go (default events.raw.v1). */
  rawTopic?: string;
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
  /** The service-role pool of the management API (`/v1/manage/...`); without it that API is not served. */
  db?: Pool;
  /** ERASURE_HASH_SECRET: key of the suppression list (issue 18); without it the erasure routes answer 503. */
  erasureHashSecret?: string | undefined;
  /** Seals webhook secrets at rest (AUTOMATIONS_SECRET_KEY); without it endpoints cannot be created or rotated. */
  automationsSecretKey?: Buffer;
}

/** The ingest HTTP API (SPEC 4). Never listens: main.ts serves it, tests call `app.request()`. */
export function createApp(deps: AppDeps) {
  const app = new Hono<{ Variables: AppVariables }>();
  const authenticator = createAuthenticator({ jwt: deps.jwt, directory: deps.directory });
  const metrics = deps.metrics ?? createMetrics();
  const ingest = createIngest(deps, metrics);
  useEdgeMiddleware(app, deps, metrics);

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
  if (deps.db) {
    const manage = manageOpenApi((description) => ({
      description,
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    }));
    Object.assign(openApi.components.schemas, manage.schemas);
    Object.assign(openApi.paths, manage.paths);
    const erasure = erasureOpenApi((description) => ({
      description,
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    }));
    Object.assign(openApi.components.schemas, erasure.schemas);
    Object.assign(openApi.paths, erasure.paths);
    const automations = automationsOpenApi((description) => ({
      description,
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    }));
    Object.assign(openApi.components.schemas, automations.schemas);
    Object.assign(openApi.paths, automations.paths);
  }
  app.get("/openapi.json", (c) => c.json(openApi));

  // An address that failed to authenticate too often is refused before its credential is looked at (edge.ts).
  app.use("/v1/*", async function requireCaller(c, next) {
    c.set(
      "caller",
      await authenticateCaller(c, requestHeader(c, "authorization"), authenticator, deps, metrics),
    );
    await next();
  });
  app.route("/v1", trackRoutes(ingest));
  app.route("/v1", batchRoutes(ingest));
  if (deps.db) app.route("/v1/manage", manageSegmentRoutes(deps.db));
  if (deps.db) app.route("/v1/manage", manageErasureRoutes(deps.db, deps.erasureHashSecret));
  if (deps.db) app.route("/v1/manage", manageAutomationRoutes(deps.db, deps.automationsSecretKey));

  app.notFound((c) => c.json({ ok: false, error: { code: "not_found", message: "no such route" } }, 404));

  app.onError(edgeErrorHandler(deps));

  return app;
}
