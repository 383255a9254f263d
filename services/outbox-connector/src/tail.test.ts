import { describe, expect, it } from "vitest";
import { maskKey, maskPii } from "./tail.ts";

describe("tail masking", () => {
  it("masks email and phone fields and identity values, nothing else", () => {
    const value = {
      contact: { email: "a@example.com", phone: "+15551234567", name: "Alice", external_id: "acct_1" },
      identities: [
        { type: "email", value: "a@example.com" },
        { type: "external_id", value: "acct_1" },
      ],
      version: 3,
    };
    expect(maskPii(value)).toEqual({
      contact: { email: "[masked]", phone: "[masked]", name: "Alice", external_id: "acct_1" },
      identities: [
        { type: "email", value: "[masked]" },
        { type: "external_id", value: "acct_1" },
      ],
      version: 3,
    });
  });

  it("masks the identifier of an events.raw.v1 key when it is an email or phone", () => {
    expect(maskKey("b1:email:a@example.com")).toBe("b1:email:[masked]");
    expect(maskKey("b1:phone:+15551234567")).toBe("b1:phone:[masked]");
    expect(maskKey("b1:ext:acct:1")).toBe("b1:ext:acct:1");
    expect(maskKey("6f1c1a52-3b7e-4c50-9d0a-1f1f1f1f1f1f")).toBe("6f1c1a52-3b7e-4c50-9d0a-1f1f1f1f1f1f");
  });
});
