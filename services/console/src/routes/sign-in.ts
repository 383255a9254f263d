import { HttpError } from "@crm/errors";
import { Hono } from "hono";
import { deleteCookie, setCookie } from "hono/cookie";
import { decodeJwt } from "jose";
import { viewerOf } from "../access.ts";
import { type ConsoleDeps, type ConsoleEnvBindings, hasOperatorClaim } from "../app.ts";
import { equal, type Principal, SESSION_COOKIE } from "../session.ts";
import { signInPage } from "../views/sign-in.ts";

/** Where to go after signing in: a path of this console only (never another origin). */
function safeNext(next: unknown): string {
  return typeof next === "string" && /^\/[A-Za-z0-9/_-]{0,200}$/.test(next) && !next.startsWith("//")
    ? next
    : "/";
}

/**
 * Sign-in with the operator credential (CONSOLE_OPERATOR_TOKEN of .stack/env) or a user's JWT (verified as
 * ingest-api verifies it); the session is an HMAC-signed HttpOnly SameSite=Strict cookie.
 */
export function signInRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();

  app.get("/sign-in", (c) => c.html(signInPage({ next: safeNext(c.req.query("next")) })));

  app.post("/sign-in", async (c) => {
    const form = await c.req.parseBody();
    const token = typeof form.token === "string" ? form.token.trim() : "";
    const next = safeNext(form.next);
    const refuse = (message: string) => c.html(signInPage({ next, error: message }), 401);
    if (token.length === 0 || token.length > 8_192)
      return refuse("Enter the operator token or a user token.");
    let principal: Principal;
    let notAfter: number | undefined;
    if (equal(token, deps.operatorToken)) {
      principal = { kind: "operator" };
    } else {
      try {
        const caller = await deps.authenticator.authenticate(`Bearer ${token}`);
        if (caller.kind !== "user") return refuse("Ingest keys cannot sign in; use a user token.");
        principal = hasOperatorClaim(token, deps.operatorClaim)
          ? { kind: "operator", userId: caller.id }
          : { kind: "user", userId: caller.id };
        notAfter = decodeJwt(token).exp;
      } catch (error) {
        if (error instanceof HttpError) return refuse("That token is not valid.");
        throw error;
      }
      const viewer = await viewerOf(principal, deps.directory);
      if (viewer.businesses?.length === 0) return refuse("This user owns or belongs to no business.");
    }
    const session = deps.sessions.issue(principal, notAfter);
    setCookie(c, SESSION_COOKIE, session.value, {
      httpOnly: true,
      sameSite: "Strict",
      path: "/",
      maxAge: session.maxAge,
      secure: new URL(c.req.url).protocol === "https:",
    });
    deps.logger.info({ who: principal.kind }, "console sign-in");
    return c.redirect(next, 303);
  });

  app.post("/sign-out", (c) => {
    deleteCookie(c, SESSION_COOKIE, { path: "/" });
    return c.redirect("/sign-in", 303);
  });

  return app;
}
