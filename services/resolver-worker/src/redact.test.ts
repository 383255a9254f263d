import { describe, expect, it } from "vitest";
import { redactPii } from "./redact.ts";

describe("redactPii", () => {
  it("masks emails and phone numbers and keeps the rest readable", () => {
    expect(redactPii('Key (value)=(alice@example.com) exists; phone "+1 (555) 123-4567"')).toBe(
      'Key (value)=([email]) exists; phone "[number]"',
    );
    expect(redactPii("deadlock detected on +15551234567")).toBe("deadlock detected on [number]");
    expect(redactPii("lock timeout after 10s")).toBe("lock timeout after 10s");
  });
});
