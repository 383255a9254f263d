import { createHash } from "node:crypto";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTVerifyGetKey,
  jwtVerify,
  type ProtectedHeaderParameters,
} from "jose";
import type { BusinessAccess, TenantDirectory } from "./tenant-directory.ts";

export type Caller =
  | { kind: "user"; id: string; businesses: () => Promise<BusinessAccess[]> }
  | { kind: "ingest_key"; id: string; business: BusinessAccess };

export type JwtAlgorithm = "HS256" | "RS256" | "ES256";

export interface JwtOptions {
  /** HS256 secret. */
  secret: string;
  audience: string;
  issuer?: string | undefined;
  /** JWKS of RS256/ES256 tokens; without it only HS256 can verify. */
  jwksUrl?: string | undefined;
  /** Accepted algorithms (default all three); `none` never is. */
  algorithms?: JwtAlgorithm[];
  /** Longest accepted lifetime, `exp - iat` (or `exp - now` without `iat`), in seconds (default 24 h). */
  maxLifetimeSeconds?: number;
  /** Clock difference tolerated on `exp` and a future `iat`, in seconds (default 60). */
  clockSkewSeconds?: number;
}

const DEFAULT_MAX_LIFETIME_SECONDS = 24 * 60 * 60;
const DEFAULT_CLOCK_SKEW_SECONDS = 60;

/**
 * Refuses a token that lives longer than allowed or claims to be issued in the future: a leaked long-lived token
 * (or one minted with a clock set ahead) would otherwise stay usable for as long as its author chose.
 */
function checkLifetime(
  payload: { iat?: number; exp?: number },
  options: JwtOptions,
  nowSeconds: number,
): void {
  const max = options.maxLifetimeSeconds ?? DEFAULT_MAX_LIFETIME_SECONDS;
  const skew = options.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS;
  if (payload.iat !== undefined && payload.iat > nowSeconds + skew) {
    throw new Unauthorized("invalid_token", "invalid token (iat is in the future)");
  }
  const issued = Math.min(payload.iat ?? nowSeconds, nowSeconds);
  if (payload.exp !== undefined && payload.exp - issued > max + skew) {
    throw new Unauthorized("invalid_token", `invalid token (lifetime over ${max} s)`);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// The only keys that exist are newIngestKey()'s (ingest-keys-cli.ts): "ik_" and 32 random bytes in unpadded
// base64url, 43 characters whose last carries 4 data bits and 2 zero bits, so it is one of these 16.
const INGEST_KEY_SHAPE = /^ik_[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
// header.payload.signature, each non-empty unpadded base64url (so `alg:none`'s empty signature is malformed too)
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/** Longest token decoded at all: Supabase's are under 1.5 KB; 8 KiB leaves room for custom claims. */
export const MAX_TOKEN_LENGTH = 8_192;

/** Why a credential was refused (a metric label): `malformed` ones cost no lookup and no signature check. */
export type UnauthorizedReason = "missing" | "malformed" | "unknown_key" | "invalid_token";

/** 401 `unauthorized` (SPEC 4), with the reason kept for metrics; the client sees only the message. */
export class Unauthorized extends HttpError {
  constructor(
    readonly reason: UnauthorizedReason,
    message: string,
  ) {
    super(401, "unauthorized", message);
  }
}

/** What `Authorization: Bearer ...` holds, told apart by its shape alone (no lookup, no signature check). */
export type Credential = { kind: "ingest_key"; key: string } | { kind: "jwt"; token: string };

/**
 * The bearer credential of an `Authorization` header, or 401 when it cannot be real: an `ik_` key of another
 * shape than the generator's, or a token that is not three base64url parts or is absurdly long. A flood of junk
 * credentials therefore costs a regular expression each, never a database round trip or a signature check.
 */
export function parseBearer(header: string | undefined): Credential {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? "");
  if (!match) throw new Unauthorized("missing", "missing bearer credentials");
  const credential = match[1]!;
  if (credential.startsWith("ik_")) {
    if (!INGEST_KEY_SHAPE.test(credential)) throw new Unauthorized("malformed", "malformed ingest key");
    return { kind: "ingest_key", key: credential };
  }
  if (credential.length > MAX_TOKEN_LENGTH || !JWT_SHAPE.test(credential)) {
    throw new Unauthorized("malformed", "malformed token");
  }
  return { kind: "jwt", token: credential };
}

/** SHA-256 of an ingest key: keys are stored hashed, so a database leak reveals none of them. */
export function hashIngestKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/**
 * The verification key of a token, chosen by its header. HS256 uses only the shared secret and RS256/ES256 only
 * the JWKS, so a token cannot pick its own key type (HS/RS confusion: an HS256 token "signed" with the public RSA
 * key fails against the secret).
 */
function keyResolver(options: JwtOptions): JWTVerifyGetKey {
  const secret = new TextEncoder().encode(options.secret);
  // jose caches the set (cacheMaxAge) and refetches on an unknown kid at most once per cooldown, so a flood of
  // tokens with random kids costs one fetch per 30 s, not one per request.
  const jwks = options.jwksUrl
    ? createRemoteJWKSet(new URL(options.jwksUrl), {
        cacheMaxAge: 10 * 60_000,
        cooldownDuration: 30_000,
        timeoutDuration: 2_000,
      })
    : undefined;
  return async (header: ProtectedHeaderParameters, token) => {
    if (header.alg === "HS256") return secret;
    if (!jwks) throw new Unauthorized("invalid_token", "asymmetric tokens are not configured");
    return jwks(header, token);
  };
}

export interface Authenticator {
  /** The caller behind an `Authorization` header; 401 `Unauthorized` when there is none or it is not valid. */
  authenticate(header: string | undefined): Promise<Caller>;
  /**
   * True when this exact header authenticated within the last `rememberVerifiedMs`. Such a caller skips the
   * per-address check of failed authentications: a producer that shares its address with a flood keeps working.
   * It is still authenticated on every request (a revoked key stops within the directory's cache window).
   */
  verifiedRecently(header: string | undefined): boolean;
}

/**
 * Resolves the caller from `Authorization: Bearer ...`: an `ik_` ingest key bound to one business, or a user JWT
 * (HS256 or RS256/ES256 from the JWKS; `exp` required, `aud` checked, `iss` when configured, allow-listed `alg`).
 * Credentials that cannot be real are refused by shape first (`parseBearer`).
 */
export function createAuthenticator(options: {
  jwt: JwtOptions;
  directory: TenantDirectory;
  /** How long a successful credential counts as recently verified (sliding; default 10 min). */
  rememberVerifiedMs?: number;
  now?: () => number;
}): Authenticator {
  const algorithms = options.jwt.algorithms ?? ["HS256", "RS256", "ES256"];
  const getKey = keyResolver(options.jwt);
  const rememberMs = options.rememberVerifiedMs ?? 10 * 60_000;
  const now = options.now ?? (() => Date.now());
  // sha256 of the presented key, memoized per key: a producer sends the same key on every request.
  const keyHashes = new Map<string, string>();
  const keyHash = (credential: string) => {
    let hash = keyHashes.get(credential);
    if (hash === undefined) {
      if (keyHashes.size >= 10_000) keyHashes.clear();
      hash = hashIngestKey(credential);
      keyHashes.set(credential, hash);
    }
    return hash;
  };
  // header -> until when it counts as verified; in insertion order of the last success, so the oldest go first.
  const verified = new Map<string, number>();
  const remember = (header: string) => {
    verified.delete(header);
    if (verified.size >= 10_000) verified.delete(verified.keys().next().value as string);
    verified.set(header, now() + rememberMs);
  };

  async function callerOf(credential: Credential): Promise<Caller> {
    if (credential.kind === "ingest_key") {
      const business = await options.directory.businessOfKey(keyHash(credential.key));
      if (!business) throw new Unauthorized("unknown_key", "unknown or revoked ingest key");
      return { kind: "ingest_key", id: business.keyId, business };
    }
    const token = credential.token;
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new Unauthorized("malformed", "malformed token");
    }
    // Checked before any key lookup, so `alg:none` or a disallowed alg never triggers a JWKS fetch.
    if (!alg || !(algorithms as string[]).includes(alg)) {
      throw new Unauthorized("invalid_token", "token algorithm not allowed");
    }
    let sub: string | undefined;
    try {
      const { payload } = await jwtVerify(token, getKey, {
        algorithms,
        audience: options.jwt.audience,
        ...(options.jwt.issuer ? { issuer: options.jwt.issuer } : {}),
        requiredClaims: ["exp", "sub"],
        clockTolerance: options.jwt.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS,
        currentDate: new Date(now()),
      });
      checkLifetime(payload, options.jwt, Math.floor(now() / 1_000));
      sub = payload.sub;
    } catch (error) {
      if (error instanceof HttpError) throw error;
      // jose reports every problem of the token itself as a JOSEError; anything else (a refused or timed-out
      // JWKS fetch) is the key server's fault, and the client should retry rather than give up.
      if (error instanceof errors.JWKSTimeout || !(error instanceof errors.JOSEError)) {
        throw new DependencyUnavailableError("jwks", "the JWKS endpoint did not answer", { cause: error });
      }
      throw new Unauthorized("invalid_token", `invalid token (${error.code})`);
    }
    if (!sub || !UUID.test(sub)) throw new Unauthorized("invalid_token", "token subject is not a user id");
    const userId = sub;
    return { kind: "user", id: userId, businesses: () => options.directory.businessesOfUser(userId) };
  }

  return {
    async authenticate(header) {
      const caller = await callerOf(parseBearer(header));
      remember(header!);
      return caller;
    },
    verifiedRecently(header) {
      if (header === undefined) return false;
      const until = verified.get(header);
      return until !== undefined && now() < until;
    },
  };
}
