import { DependencyUnavailableError } from "@crm/errors";
import { describe, expect, it } from "vitest";
import { isConnectionFailure, isTransientDbError } from "./index.ts";

const withCode = (code: string, message = `error ${code}`) => Object.assign(new Error(message), { code });

describe("isConnectionFailure", () => {
  it("is a connection that failed or a server going away", () => {
    for (const code of ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P02", "57P03"])
      expect(isConnectionFailure(withCode(code)), code).toBe(true);
    expect(isConnectionFailure(new Error("Connection terminated unexpectedly"))).toBe(true);
    expect(isConnectionFailure(new Error("timeout exceeded when trying to connect"))).toBe(true);
    expect(isConnectionFailure(new DependencyUnavailableError("postgres", "cannot connect"))).toBe(true);
  });

  it("is never an answer of a live server, whatever its class or message", () => {
    for (const code of ["08P01", "08006", "08003", "22021", "23503", "40P01", "XX000"])
      expect(isConnectionFailure(withCode(code)), code).toBe(false);
    expect(isConnectionFailure(withCode("P0001", "Connection terminated by the application"))).toBe(false);
  });
});

describe("isTransientDbError", () => {
  it("retries races, lock timeouts and connection failures, not a statement the server refused", () => {
    for (const code of ["40001", "40P01", "55P03", "53300", "ECONNRESET", "57P01"])
      expect(isTransientDbError(withCode(code)), code).toBe(true);
    for (const code of ["08P01", "22021", "23503", "42501"])
      expect(isTransientDbError(withCode(code)), code).toBe(false);
  });
});
