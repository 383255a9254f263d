import { createHash } from "node:crypto";
import { HttpError } from "@crm/errors";
import { errors, jwtVerify } from "jose";
import type { BusinessAccess, TenantDirectory } from "./tenant-directory.ts";

export type Caller =
  | { kind: "user"; id: string; businesses: () => Promise<BusinessAccess[]> }
  | { kind: "ingest_key"; id: string; business: BusinessAccess };

export interface JwtOptions {
  secret: string;
  audience: string;
  issuer?: string | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const unauthorized = (message: string) => new HttpError(401, "unauthorized", message);

/** SHA-256 of an ingest key: keys are stored hashed, so a database leak reveals none of them. */
export function hashIngestKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/**
 * Resolves the caller from `Authorization: Bearer ...`: an `ik_` ingest key bound to one business, or an HS256
 * user JWT (`exp` required, `aud` checked, `iss` when configured, no other algorithm accepted).
 */
export function createAuthenticator(options: { jwt: JwtOptions; directory: TenantDirectory }) {
  const secret = new TextEncoder().encode(options.jwt.secret);
  return async function authenticate(header: string | undefined): Promise<Caller> {
    const match = /^Bearer\s+(\S+)$/i.exec(header ?? "");
    if (!match) throw unauthorized("missing bearer credentials");
    const credential = match[1]!;
    if (credential.startsWith("ik_")) {
      const business = await options.directory.businessOfKey(hashIngestKey(credential));
      if (!business) throw unauthorized("unknown or revoked ingest key");
      return { kind: "ingest_key", id: business.keyId, business };
    }
    let sub: string | undefined;
    try {
      const { payload } = await jwtVerify(credential, secret, {
        algorithms: ["HS256"],
        audience: options.jwt.audience,
        ...(options.jwt.issuer ? { issuer: options.jwt.issuer } : {}),
        requiredClaims: ["exp", "sub"],
      });
      sub = payload.sub;
    } catch (error) {
      const reason = error instanceof errors.JOSEError ? error.code : "invalid token";
      throw unauthorized(`invalid token (${reason})`);
    }
    if (!sub || !UUID.test(sub)) throw unauthorized("token subject is not a user id");
    const userId = sub;
    return { kind: "user", id: userId, businesses: () => options.directory.businessesOfUser(userId) };
  };
}
