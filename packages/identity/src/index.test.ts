import { describe, expect, it } from "vitest";
import { normalizeEmail, normalizeExternalId, normalizePhone, partitionKey } from "./index.ts";

describe("normalizeEmail", () => {
  it("trims, folds case and applies NFKC so one mailbox is one identity", () => {
    expect(normalizeEmail("  Alice@Example.COM ")).toEqual({ ok: true, value: "alice@example.com" });
    // Fullwidth letters fold to ASCII under NFKC.
    expect(normalizeEmail("ａlice@example.com")).toEqual({ ok: true, value: "alice@example.com" });
  });
  it.each(["", "alice", "alice@", "@example.com", "alice@example", "a b@example.com", "alice@@example.com"])(
    "rejects %j",
    (raw) => expect(normalizeEmail(raw).ok).toBe(false),
  );
});

describe("normalizePhone", () => {
  it("stores E.164 whatever the formatting", () => {
    expect(normalizePhone("+1 (555) 123-4567")).toEqual({ ok: true, value: "+15551234567" });
    expect(normalizePhone("+15551234567")).toEqual({ ok: true, value: "+15551234567" });
  });
  it("uses the business's default country for national numbers", () => {
    expect(normalizePhone("(555) 123-4567", "US")).toEqual({ ok: true, value: "+15551234567" });
    expect(normalizePhone("030 123456", "DE")).toEqual({ ok: true, value: "+4930123456" });
  });
  it.each(["", "12", "hello", "+1 555", "+999 1234567"])("rejects %j", (raw) => {
    expect(normalizePhone(raw).ok).toBe(false);
  });
});

describe("normalizeExternalId", () => {
  it("trims and keeps case", () =>
    expect(normalizeExternalId(" Acct_42 ")).toEqual({ ok: true, value: "Acct_42" }));
  it("rejects empty and over-long values", () => {
    expect(normalizeExternalId("  ").ok).toBe(false);
    expect(normalizeExternalId("x".repeat(256)).ok).toBe(false);
  });
});

describe("partitionKey", () => {
  it("keys by the highest-priority identifier", () => {
    expect(partitionKey("b", { email: "a@x.io", phone: "+15551234567" }, "e")).toBe("b:email:a@x.io");
    expect(partitionKey("b", { external_id: "acct_42", email: "a@x.io" }, "e")).toBe("b:ext:acct_42");
    expect(partitionKey("b", {}, "e1")).toBe("b:event:e1");
  });
});
