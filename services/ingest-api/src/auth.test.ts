import { randomBytes } from "node:crypto";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import { generateKeyPair, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createAuthenticator, hashIngestKey, MAX_TOKEN_LENGTH, parseBearer, Unauthorized } from "./auth.ts";
import { newIngestKey } from "./ingest-keys-cli.ts";
import type { TenantDirectory } from "./tenant-directory.ts";

const directory: TenantDirectory = {
  businessesOfUser: async () => [],
  businessOfKey: async () => undefined,
};
const USER = "11111111-1111-4111-8111-111111111111";

describe("authenticate", () => {
  it("answers 503 (retry later), not 401, when the JWKS endpoint cannot be reached", async () => {
    const { privateKey } = await generateKeyPair("RS256");
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .setSubject(USER)
      .setAudience("authenticated")
      .setExpirationTime("5m")
      .sign(privateKey);
    const authenticate = createAuthenticator({
      // port 9 (discard) is closed on test machines: the fetch is refused
      jwt: { secret: "x".repeat(32), audience: "authenticated", jwksUrl: "http://127.0.0.1:9/jwks.json" },
      directory,
    });
    await expect(authenticate.authenticate(`Bearer ${token}`)).rejects.toBeInstanceOf(
      DependencyUnavailableError,
    );
  });

  it("refuses RS256 tokens when no JWKS is configured, and garbage, with 401", async () => {
    const authenticate = createAuthenticator({
      jwt: { secret: "x".repeat(32), audience: "authenticated" },
      directory,
    });
    const { privateKey } = await generateKeyPair("RS256");
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "RS256" })
      .setSubject(USER)
      .setAudience("authenticated")
      .setExpirationTime("5m")
      .sign(privateKey);
    for (const credential of [token, "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig"]) {
      const error = await authenticate.authenticate(`Bearer ${credential}`).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(HttpError);
      expect((error as HttpError).status).toBe(401);
    }
  });
});

describe("token lifetime (issue 14.4)", () => {
  const SECRET = "s".repeat(32);
  const NOW = Date.parse("2020-01-01T10:00:00Z");
  const seconds = NOW / 1_000;
  const token = (claims: { iat?: number; exp: number; iss?: string }) => {
    const jwt = new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(USER)
      .setAudience("authenticated")
      .setExpirationTime(claims.exp);
    if (claims.iat !== undefined) jwt.setIssuedAt(claims.iat);
    if (claims.iss !== undefined) jwt.setIssuer(claims.iss);
    return jwt.sign(new TextEncoder().encode(SECRET));
  };
  const authenticator = (issuer?: string) =>
    createAuthenticator({
      jwt: { secret: SECRET, audience: "authenticated", issuer, maxLifetimeSeconds: 24 * 3_600 },
      directory,
      now: () => NOW,
    });
  const statusOf = (auth: ReturnType<typeof authenticator>, jwt: string) =>
    auth.authenticate(`Bearer ${jwt}`).then(
      () => 200,
      (error: HttpError) => error.status,
    );

  it("accepts a 1 h token issued now, as Supabase issues them", async () => {
    expect(await statusOf(authenticator(), await token({ iat: seconds, exp: seconds + 3_600 }))).toBe(200);
  });

  it("refuses a lifetime over the maximum, with or without iat", async () => {
    const auth = authenticator();
    expect(await statusOf(auth, await token({ iat: seconds, exp: seconds + 48 * 3_600 }))).toBe(401);
    expect(await statusOf(auth, await token({ exp: seconds + 48 * 3_600 }))).toBe(401);
  });

  it("refuses iat an hour ahead, tolerates a minute of skew", async () => {
    const auth = authenticator();
    expect(await statusOf(auth, await token({ iat: seconds + 3_600, exp: seconds + 7_200 }))).toBe(401);
    expect(await statusOf(auth, await token({ iat: seconds + 30, exp: seconds + 3_600 }))).toBe(200);
  });

  it("refuses a foreign iss when an issuer is configured", async () => {
    const auth = authenticator("https://auth.example/auth/v1");
    const claims = { iat: seconds, exp: seconds + 3_600 };
    expect(await statusOf(auth, await token({ ...claims, iss: "https://evil.example" }))).toBe(401);
    expect(await statusOf(auth, await token(claims))).toBe(401);
    expect(await statusOf(auth, await token({ ...claims, iss: "https://auth.example/auth/v1" }))).toBe(200);
  });
});

describe("parseBearer: credentials that cannot be real are refused by shape", () => {
  const reasonOf = (header: string | undefined) => {
    try {
      parseBearer(header);
      return "accepted";
    } catch (error) {
      expect(error).toBeInstanceOf(Unauthorized);
      expect((error as Unauthorized).status).toBe(401);
      return (error as Unauthorized).reason;
    }
  };

  it("accepts every key the generator makes", () => {
    for (let i = 0; i < 2_000; i++) {
      const key = newIngestKey();
      expect(parseBearer(`Bearer ${key}`)).toEqual({ kind: "ingest_key", key });
    }
  });

  it("refuses ik_ keys of any other shape", () => {
    const good = newIngestKey();
    const body = good.slice(3, 45);
    for (const key of [
      "ik_",
      "ik_short",
      `${good}A`, // 44 characters
      good.slice(0, -1), // 42 characters
      `ik_${body}B`, // a last character base64url of 32 bytes cannot end with (its low bits must be zero)
      `ik_${body.slice(0, -1)}+A`, // standard base64, not base64url
      `ik_${body.slice(0, -1)}.A`,
      `ik_${"A".repeat(42)}=`,
      `ik_${randomBytes(48).toString("base64url")}`,
    ]) {
      expect(reasonOf(`Bearer ${key}`), key).toBe("malformed");
    }
  });

  it("refuses tokens that are not three base64url parts, or absurdly long", () => {
    const part = (n: number) => "a".repeat(n);
    for (const token of [
      "a.b",
      "a.b.c.d",
      "a..c",
      ".b.c",
      "eyJhbGciOiJub25lIn0.e30.", // alg none: empty signature
      "a+b.c.d",
      "a.b.c=",
      `${part(100)}.${part(MAX_TOKEN_LENGTH)}.${part(100)}`,
      "not-a-token",
    ]) {
      expect(reasonOf(`Bearer ${token}`), token.slice(0, 40)).toBe("malformed");
    }
    expect(parseBearer("Bearer a.b.c")).toEqual({ kind: "jwt", token: "a.b.c" });
  });

  it("refuses a missing or non-bearer header", () => {
    for (const header of [undefined, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a.b.c extra"]) {
      expect(reasonOf(header)).toBe("missing");
    }
  });

  it("never asks the directory about a malformed key, and asks once about a well-shaped unknown one", async () => {
    const asked: string[] = [];
    const authenticator = createAuthenticator({
      jwt: { secret: "x".repeat(32), audience: "authenticated" },
      directory: {
        businessesOfUser: async () => [],
        businessOfKey: async (hash) => {
          asked.push(hash);
          return undefined;
        },
      },
    });
    for (const key of ["ik_123", `ik_${"A".repeat(43)}=`, `${newIngestKey()}x`]) {
      await expect(authenticator.authenticate(`Bearer ${key}`)).rejects.toMatchObject({
        reason: "malformed",
      });
    }
    expect(asked).toEqual([]);
    await expect(authenticator.authenticate(`Bearer ${newIngestKey()}`)).rejects.toMatchObject({
      reason: "unknown_key",
    });
    expect(asked).toHaveLength(1);
  });
});

describe("verifiedRecently", () => {
  it("remembers a credential that authenticated, for a sliding window, and nothing that failed", async () => {
    let now = 0;
    const key = newIngestKey();
    const authenticator = createAuthenticator({
      jwt: { secret: "x".repeat(32), audience: "authenticated" },
      directory: {
        businessesOfUser: async () => [],
        businessOfKey: async (hash) =>
          hash === hashIngestKey(key)
            ? { keyId: "k", businessId: "b", plan: "standard", defaultCountry: "US" }
            : undefined,
      },
      rememberVerifiedMs: 1_000,
      now: () => now,
    });
    const other = `Bearer ${newIngestKey()}`;
    expect(authenticator.verifiedRecently(`Bearer ${key}`)).toBe(false);
    await authenticator.authenticate(`Bearer ${key}`);
    await authenticator.authenticate(other).catch(() => {});
    expect(authenticator.verifiedRecently(`Bearer ${key}`)).toBe(true);
    expect(authenticator.verifiedRecently(other)).toBe(false);
    expect(authenticator.verifiedRecently(undefined)).toBe(false);
    now = 900;
    await authenticator.authenticate(`Bearer ${key}`);
    now = 1_800;
    expect(authenticator.verifiedRecently(`Bearer ${key}`)).toBe(true);
    now = 2_000;
    expect(authenticator.verifiedRecently(`Bearer ${key}`)).toBe(false);
  });
});
