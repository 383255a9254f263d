import { describe, expect, it } from "vitest";
import { maskDeep, maskEmail, maskKey, maskPhone } from "./mask.ts";

describe("masking", () => {
  it("keeps a hint, never the value", () => {
    expect(maskEmail("alice@example.com")).toBe("a•••@e•••.com");
    expect(maskPhone("+15551234567")).toBe("+•••••67");
    expect(maskKey("b1:email:alice@example.com")).toBe("b1:email:a•••@e•••.com");
    expect(maskKey("b1:ext:acct_42")).toBe("b1:ext:acct_42");
  });

  it("masks PII fields and identity pairs at any depth", () => {
    const masked = JSON.stringify(
      maskDeep({
        contact: { email: "alice@example.com", phone: "+15551234567", name: "Alice", external_id: "a1" },
        identities: [
          { type: "email", value: "alice@example.com" },
          { type: "external_id", value: "a1" },
        ],
      }),
    );
    expect(masked).not.toContain("alice@");
    expect(masked).not.toContain("1234567");
    expect(masked).not.toContain("Alice");
    expect(masked).toContain('"a1"');
    const at = new Date();
    expect(maskDeep({ changed_at: at })).toEqual({ changed_at: at });
  });
});
