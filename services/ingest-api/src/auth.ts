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
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const unauthorized = (message: string) => new HttpError(401, "unauthorized", message);

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
    if (!jwks) throw unauthorized("asymmetric tokens are not configured");
    return jwks(header, token);
  };
}

/**
 * Resolves the caller from `Authorization: Bearer ...`: an `ik_` ingest key bound to one business, or a user JWT
 * (HS256 or RS256/ES256 from the JWKS; `exp` required, `aud` checked, `iss` when configured, allow-listed `alg`).
 */
export function createAuthenticator(options: { jwt: JwtOptions; directory: TenantDirectory }) {
  const algorithms = options.jwt.algorithms ?? ["HS256", "RS256", "ES256"];
  const getKey = keyResolver(options.jwt);
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
  return async function authenticate(header: string | undefined): Promise<Caller> {
    const match = /^Bearer\s+(\S+)$/i.exec(header ?? "");
    if (!match) throw unauthorized("missing bearer credentials");
    const credential = match[1]!;
    if (credential.startsWith("ik_")) {
      const business = await options.directory.businessOfKey(keyHash(credential));
      if (!business) throw unauthorized("unknown or revoked ingest key");
      return { kind: "ingest_key", id: business.keyId, business };
    }
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(credential).alg;
    } catch {
      throw unauthorized("malformed token");
    }
    // Checked before any key lookup, so `alg:none` or a disallowed alg never triggers a JWKS fetch.
    if (!alg || !(algorithms as string[]).includes(alg)) throw unauthorized("token algorithm not allowed");
    let sub: string | undefined;
    try {
      const { payload } = await jwtVerify(credential, getKey, {
        algorithms,
        audience: options.jwt.audience,
        ...(options.jwt.issuer ? { issuer: options.jwt.issuer } : {}),
        requiredClaims: ["exp", "sub"],
      });
      sub = payload.sub;
    } catch (error) {
      if (error instanceof HttpError) throw error;
      // jose reports every problem of the token itself as a JOSEError; anything else (a refused or timed-out
      // JWKS fetch) is the key server's fault, and the client should retry rather than give up.
      if (error instanceof errors.JWKSTimeout || !(error instanceof errors.JOSEError)) {
        throw new DependencyUnavailableError("jwks", "the JWKS endpoint did not answer", { cause: error });
      }
      throw unauthorized(`invalid token (${error.code})`);
    }
    if (!sub || !UUID.test(sub)) throw unauthorized("token subject is not a user id");
    const userId = sub;
    return { kind: "user", id: userId, businesses: () => options.directory.businessesOfUser(userId) };
  };
}
