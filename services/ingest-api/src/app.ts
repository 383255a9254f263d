import { randomUUID } from "node:crypto";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import type { EventProducer } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { createAuthenticator, type JwtOptions } from "./auth.ts";
import type { AppVariables } from "./http.ts";
import { trackRoutes } from "./routes/track.ts";
import type { TenantDirectory } from "./tenant-directory.ts";

export interface AppDeps {
  producer: EventProducer;
  directory: TenantDirectory;
  jwt: JwtOptions;
  logger: Logger;
  logHashSecret: string;
}

/** The ingest HTTP API (SPEC 4). Never listens: main.ts serves it, tests call `app.request()`. */
export function createApp(deps: AppDeps) {
  const app = new Hono<{ Variables: AppVariables }>();
  const authenticate = createAuthenticator({ jwt: deps.jwt, directory: deps.directory });

  app.use(async function requestId(c, next) {
    const incoming = c.req.header("x-request-id");
    const id = incoming && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    c.set("requestId", id);
    c.header("x-request-id", id);
    await next();
  });

  app.get("/healthz", (c) => c.json({ ok: true }));

  app.use("/v1/*", async function requireCaller(c, next) {
    c.set("caller", await authenticate(c.req.header("authorization")));
    await next();
  });
  app.route("/v1", trackRoutes(deps));

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
