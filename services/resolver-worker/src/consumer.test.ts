import { DependencyUnavailableError, NonRetriableError } from "@crm/errors";
import { describe, expect, it } from "vitest";
import { classifyFailure } from "./consumer.ts";

const pgError = (code: string) => Object.assign(new Error(`pg ${code}`), { code });

describe("classifyFailure", () => {
  it("waits out an unreachable database instead of dead-lettering events", () => {
    expect(classifyFailure(new DependencyUnavailableError("postgres", "down"))).toBe("unavailable");
    expect(classifyFailure(pgError("ECONNREFUSED"))).toBe("unavailable");
    expect(classifyFailure(pgError("57P01"))).toBe("unavailable");
    expect(classifyFailure(new Error("Connection terminated unexpectedly"))).toBe("unavailable");
  });
  it("retries races and timeouts", () => {
    for (const code of ["40001", "40P01", "23505", "55P03"])
      expect(classifyFailure(pgError(code))).toBe("transient");
    expect(classifyFailure(new Error("something odd"))).toBe("transient");
  });
  it("dead-letters what can never succeed", () => {
    expect(classifyFailure(new NonRetriableError("bad"))).toBe("permanent");
    for (const code of ["22P02", "23503", "23514", "42501"])
      expect(classifyFailure(pgError(code))).toBe("permanent");
  });
});
