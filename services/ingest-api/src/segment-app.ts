import { Hono } from "hono";
import type { AppDeps } from "./app.ts";
import { createAuthenticator } from "./auth.ts";
import { authenticateCaller, createIngest, edgeErrorHandler, useEdgeMiddleware } from "./edge.ts";
import type { AppVariables } from "./http.ts";
import { createMetrics } from "./metrics.ts";
import type { RejectedEventStore } from "./rejected-events.ts";
import { segmentRoutes } from "./routes/segment.ts";

export interface SegmentAppDeps extends AppDeps {
  /** Where messages refused one by one are kept (their request still answers 200). */
  rejected: RejectedEventStore;
  /** See SegmentRoutesOptions.inFlightWaitMs. */
  inFlightWaitMs?: number;
}

/**
 * The Segment-compatible listener (issue 15, SPEC 11): Segment's paths, write keys and statuses in front of the
 * same accept path, rate limits, tenant check and pre-auth protection as the API of SPEC 4. Its own port, because
 * analytics-node drops any path prefix of its `host`: `/v1/batch` here is Segment's batch. Never listens: main.ts
 * serves it beside createApp's app, with the same deps (so one rate-limit bucket per key across both).
 */
export function createSegmentApp(deps: SegmentAppDeps) {
  const app = new Hono<{ Variables: AppVariables }>();
  const authenticator = createAuthenticator({ jwt: deps.jwt, directory: deps.directory });
  const metrics = deps.metrics ?? createMetrics();
  const ingest = createIngest(deps, metrics);
  useEdgeMiddleware(app, deps, metrics, "segment:");

  app.get("/healthz", (c) => c.json({ ok: true }));
  app.route(
    "/v1",
    segmentRoutes({
      ingest,
      rejected: deps.rejected,
      authenticate: (c, writeKey) =>
        authenticateCaller(
          c,
          writeKey === undefined ? undefined : `Bearer ${writeKey}`,
          authenticator,
          deps,
          metrics,
          true,
        ),
      ...(deps.inFlightWaitMs === undefined ? {} : { inFlightWaitMs: deps.inFlightWaitMs }),
    }),
  );
  app.notFound((c) => c.json({ ok: false, error: { code: "not_found", message: "no such route" } }, 404));
  app.onError(edgeErrorHandler(deps));
  return app;
}
