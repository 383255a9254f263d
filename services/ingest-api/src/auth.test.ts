import { DependencyUnavailableError, HttpError } from "@crm/errors";
import { generateKeyPair, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createAuthenticator } from "./auth.ts";
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
    await expect(authenticate(`Bearer ${token}`)).rejects.toBeInstanceOf(DependencyUnavailableError);
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
      const error = await authenticate(`Bearer ${credential}`).catch((e) => e);
      expect(error).toBeInstanceOf(HttpError);
      expect((error as HttpError).status).toBe(401);
    }
  });
});
