import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Who signed in: the operator (every business), or a user of a business (owner or team member) who sees only the
 * businesses the directory gives them on each request.
 */
export type Principal =
  | { kind: "operator" /** set when a JWT with the operator claim signed in */; userId?: string }
  | { kind: "user"; userId: string };

interface SessionBody {
  /** "op" or "user:<uuid>" */
  p: string;
  /** expiry, epoch seconds */
  e: number;
  /** random: two sessions of one principal never share a cookie (or its CSRF token) */
  n: string;
}

export const SESSION_COOKIE = "crm_console";

/**
 * Sessions as HMAC-signed cookies: nothing is stored server-side, a forged or edited cookie fails the signature,
 * and the expiry is inside the signed part. The CSRF token is a second HMAC of the cookie, so a page can embed it
 * and a cross-site form cannot know it (SameSite=Strict already keeps the cookie off such requests; the token is
 * the second lock).
 */
export class Sessions {
  private readonly key: Buffer;

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.key = createHash("sha256").update(`console-session:${secret}`).digest();
  }

  /** A new session cookie value, expiring at the earlier of the TTL and `notAfter` (a JWT's exp). */
  issue(principal: Principal, notAfterSeconds?: number): { value: string; maxAge: number } {
    const nowS = Math.floor(this.now() / 1_000);
    const e = Math.min(nowS + this.ttlSeconds, notAfterSeconds ?? Number.POSITIVE_INFINITY);
    const body: SessionBody = {
      p:
        principal.kind === "operator"
          ? principal.userId
            ? `op:${principal.userId}`
            : "op"
          : `user:${principal.userId}`,
      e,
      n: randomBytes(12).toString("base64url"),
    };
    const payload = Buffer.from(JSON.stringify(body)).toString("base64url");
    return { value: `${payload}.${this.sign(payload)}`, maxAge: Math.max(0, e - nowS) };
  }

  /** The principal of a cookie value, or undefined when it is missing, forged, malformed or expired. */
  verify(value: string | undefined): Principal | undefined {
    if (!value || value.length > 512) return undefined;
    const [payload, signature, ...rest] = value.split(".");
    if (!payload || !signature || rest.length > 0) return undefined;
    if (!equal(signature, this.sign(payload))) return undefined;
    let body: SessionBody;
    try {
      body = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    } catch {
      return undefined;
    }
    if (typeof body.e !== "number" || body.e * 1_000 <= this.now()) return undefined;
    if (body.p === "op") return { kind: "operator" };
    const match = /^(user|op):([0-9a-f-]{36})$/.exec(String(body.p));
    if (!match) return undefined;
    return match[1] === "op" ? { kind: "operator", userId: match[2]! } : { kind: "user", userId: match[2]! };
  }

  /** The CSRF token that belongs to a session cookie value. */
  csrfToken(cookieValue: string): string {
    return this.sign(`csrf:${cookieValue}`);
  }

  /** True when `token` is the CSRF token of this cookie value. */
  csrfValid(cookieValue: string, token: string | undefined): boolean {
    return typeof token === "string" && token.length < 200 && equal(token, this.csrfToken(cookieValue));
  }

  private sign(text: string): string {
    return createHmac("sha256", this.key).update(text).digest("base64url");
  }
}

/** Constant-time comparison of two strings of any length. */
export function equal(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}
