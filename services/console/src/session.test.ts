import { describe, expect, it } from "vitest";
import { Sessions } from "./session.ts";

describe("Sessions", () => {
  const secret = "s".repeat(40);
  let now = 1_800_000_000_000;
  const sessions = new Sessions(secret, 3_600, () => now);

  it("round-trips the operator and a user, and nothing else", () => {
    expect(sessions.verify(sessions.issue({ kind: "operator" }).value)).toEqual({ kind: "operator" });
    const userId = "0b0a8f7e-5d2c-4e21-9a43-3f1c2b7d9e10";
    expect(sessions.verify(sessions.issue({ kind: "user", userId }).value)).toEqual({ kind: "user", userId });
    expect(sessions.verify(sessions.issue({ kind: "operator", userId }).value)).toEqual({
      kind: "operator",
      userId,
    });
    expect(sessions.verify(undefined)).toBeUndefined();
    expect(sessions.verify("a.b")).toBeUndefined();
    expect(
      new Sessions("t".repeat(40), 3_600, () => now).verify(sessions.issue({ kind: "operator" }).value),
    ).toBeUndefined();
  });

  it("expires at the TTL or at the token's own expiry, whichever comes first", () => {
    const { value, maxAge } = sessions.issue({ kind: "operator" }, now / 1_000 + 60);
    expect(maxAge).toBe(60);
    now += 61_000;
    expect(sessions.verify(value)).toBeUndefined();
  });

  it("ties the CSRF token to one session", () => {
    const one = sessions.issue({ kind: "operator" }).value;
    const two = sessions.issue({ kind: "operator" }).value;
    expect(sessions.csrfValid(one, sessions.csrfToken(one))).toBe(true);
    expect(sessions.csrfValid(two, sessions.csrfToken(one))).toBe(false);
    expect(sessions.csrfValid(one, undefined)).toBe(false);
  });
});
