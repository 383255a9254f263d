import type { Authenticator, TenantDirectory } from "@crm/auth";
import { isConnectionFailure, type Pool } from "@crm/db";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import type { Kafka } from "@crm/kafka";
import type { Logger } from "@crm/logger";
import { type Context, Hono } from "hono";

import { getCookie } from "hono/cookie";
import { html } from "hono/html";
import { decodeJwt } from "jose";
import { type Viewer, viewerOf } from "./access.ts";
import type { DeadLetterLog } from "./dead-letters.ts";
import type { RateSampler } from "./rates.ts";
import { auditRoutes } from "./routes/audit.ts";
import { contactRoutes } from "./routes/contacts.ts";
import { deadLetterRoutes } from "./routes/dead-letters.ts";
import { overviewRoutes } from "./routes/overview.ts";
import { signInRoutes } from "./routes/sign-in.ts";
import { topicRoutes } from "./routes/topics.ts";
import { equal, type Principal, SESSION_COOKIE, type Sessions } from "./session.ts";
import { page } from "./views/layout.ts";

export interface ConsoleDeps {
  db: Pool;
  directory: TenantDirectory;
  authenticator: Authenticator;
  sessions: Sessions;
  operatorToken: string;
  /** dotted path of a JWT claim that makes its user an operator when true (e.g. app_metadata.crm_operator) */
  operatorClaim?: string | undefined;
  kafka: Kafka;
  /** writes replays into the raw topic (idempotent, acks=all); its answer says where each replay landed */
  replays: ReturnType<Kafka["producer"]>;
  deadLetters: DeadLetterLog;
  rates: RateSampler;
  rawTopic: string;
  dlqTopic: string;
  /** topics of the Topics page besides the raw and DLQ topics */
  topics: string[];
  connect: {
    url: string | undefined;
    username?: string | undefined;
    password?: string | undefined;
    name: string;
  };
  slotName: string;
  /** prefixes of the consumer groups whose lag the overview shows */
  lagGroups: string[];
  services: { name: string; url: string }[];
  logger: Logger;
}

export type ConsoleEnvBindings = {
  Variables: { viewer: Viewer; csrf: string | undefined; cookieAuth: boolean };
};
export type ConsoleContext = Context<ConsoleEnvBindings>;

/** True for the JSON API (`/api/...`): errors and answers are JSON there, HTML elsewhere. */
export const isApi = (c: Context) => c.req.path.startsWith("/api/");

/** 400/403/404 in the SPEC 4 shape. */
export const httpError = (status: number, code: string, message: string) =>
  new HttpError(status, code, message);

/**
 * The console's HTTP app (issue 19): server-rendered pages and the JSON API behind them, one handler each, both
 * behind the same sign-in. Never listens: main.ts serves it, tests call `app.request()`.
 */
export function createApp(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();

  app.use("*", async function securityHeaders(c, next) {
    await next();
    c.header("x-content-type-options", "nosniff");
    c.header("x-frame-options", "DENY");
    c.header("referrer-policy", "same-origin");
    c.header("cache-control", "no-store");
    // Inline styles and the one inline script of a page; nothing from elsewhere.
    c.header(
      "content-security-policy",
      "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    );
  });

  app.get("/healthz", (c) => c.json({ ok: true }));

  // A cross-site POST is refused before anything else (the sign-in form included: no login CSRF).
  app.use("*", async function sameOrigin(c, next) {
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      const origin = c.req.header("origin");
      const host = c.req.header("host") ?? new URL(c.req.url).host;
      if (origin && sameHost(origin) !== host) {
        throw httpError(403, "forbidden_origin", "cross-site request refused");
      }
    }
    await next();
  });

  app.route("/", signInRoutes(deps));

  app.use("*", async function requireViewer(c, next) {
    const cookie = getCookie(c, SESSION_COOKIE);
    let principal: Principal | undefined = deps.sessions.verify(cookie);
    let cookieAuth = principal !== undefined;
    if (!principal) {
      principal = await bearerPrincipal(deps, c.req.header("authorization"));
      cookieAuth = false;
    }
    if (!principal) {
      if (isApi(c) || c.req.method !== "GET") throw httpError(401, "unauthorized", "sign in first");
      const next = encodeURIComponent(c.req.path);
      return c.redirect(`/sign-in?next=${next}`, 303);
    }
    const viewer = await viewerOf(principal, deps.directory);
    if (viewer.businesses !== null && viewer.businesses.length === 0) {
      throw httpError(403, "no_business", "this user owns or belongs to no business");
    }
    c.set("viewer", viewer);
    c.set("cookieAuth", cookieAuth);
    c.set("csrf", cookieAuth && cookie ? deps.sessions.csrfToken(cookie) : undefined);
    // A cookie is sent by the browser on its own: every state change through one needs the page's CSRF token.
    if (cookieAuth && c.req.method !== "GET" && c.req.method !== "HEAD") {
      let token = c.req.header("x-csrf-token");
      if (!token && (c.req.header("content-type") ?? "").includes("application/x-www-form-urlencoded")) {
        // {all: true} here as in the routes: Hono parses a body once and keeps the first parse.
        const form = await c.req.parseBody({ all: true });
        token = typeof form._csrf === "string" ? form._csrf : undefined;
      }
      if (!deps.sessions.csrfValid(cookie!, token))
        throw httpError(403, "csrf", "missing or invalid CSRF token");
    }
    await next();
  });

  app.route("/", overviewRoutes(deps));
  app.route("/", topicRoutes(deps));
  app.route("/", deadLetterRoutes(deps));
  app.route("/", contactRoutes(deps));
  app.route("/", auditRoutes(deps));

  app.notFound((c) => {
    if (isApi(c)) return c.json({ ok: false, error: { code: "not_found", message: "no such route" } }, 404);
    return c.html(errorPage(c, 404, "Not found", "There is no such page."), 404);
  });

  app.onError((error, c) => {
    let status = 500;
    let code = "internal";
    let message = "internal error";
    if (error instanceof HttpError) {
      status = error.status;
      code = error.code;
      message = error.message;
    } else if (
      error instanceof DependencyUnavailableError ||
      isConnectionFailure(error) ||
      // kafkajs's errors (KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, ...): the broker, not the request
      error.name.startsWith("KafkaJS")
    ) {
      status = 503;
      code = "unavailable";
      message = "a dependency (Postgres, Kafka) is unavailable; try again";
    } else {
      deps.logger.error({ err: error.message, path: c.req.path }, "console request failed");
    }
    if (isApi(c) || status === 401) {
      return c.json({ ok: false, error: { code, message } }, status as 400);
    }
    return c.html(errorPage(c, status, code, message), status as 400);
  });

  return app;
}

function errorPage(c: Context, status: number, title: string, message: string) {
  const viewer = c.get("viewer") as Viewer | undefined;
  return page({
    title,
    path: c.req.path,
    viewer,
    csrf: c.get("csrf") as string | undefined,
    body: html`<h1>${title}</h1><p class="notice error">${message} (HTTP ${status})</p><p><a href="/">Back to the overview</a></p>`,
  });
}

/**
 * True when the token (already verified) carries `true` at the claim path: Supabase puts such roles in
 * `app_metadata`, which only the server side can set. No path configured: no JWT is an operator.
 */
export function hasOperatorClaim(token: string, path: string | undefined): boolean {
  if (!path) return false;
  let value: unknown = decodeJwt(token);
  for (const part of path.split(".")) {
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, part)) return false;
    value = (value as Record<string, unknown>)[part];
  }
  return value === true;
}

/** The host of an Origin header ("null" and junk match nothing). */
function sameHost(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

/** `Authorization: Bearer <operator token | user JWT>`: the JSON API's way in for scripts (no CSRF: no cookie). */
async function bearerPrincipal(
  deps: ConsoleDeps,
  header: string | undefined,
): Promise<Principal | undefined> {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? "");
  if (!match) return undefined;
  if (equal(match[1]!, deps.operatorToken)) return { kind: "operator" };
  try {
    const caller = await deps.authenticator.authenticate(`Bearer ${match[1]}`);
    if (caller.kind !== "user") return undefined;
    return hasOperatorClaim(match[1]!, deps.operatorClaim)
      ? { kind: "operator", userId: caller.id }
      : { kind: "user", userId: caller.id };
  } catch (error) {
    if (error instanceof HttpError) throw httpError(401, "unauthorized", error.message);
    throw error;
  }
}
