import { describe, expect, it } from "vitest";
import {
  eventSuppressionEntries,
  normalizeAnonymousId,
  normalizeEmail,
  normalizeExternalId,
  normalizePhone,
  partitionKey,
  suppressionHash,
} from "./index.ts";

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

describe("look-alike identifiers (issue 11)", () => {
  it.each([
    "bo\u200Bb@x.com",
    "\u202Ebob@x.com",
    "bob@x.com\uFEFF",
    "b\u00ADob@x.com",
    "\u2066bob\u2069@x.com",
  ])("%j is bob@x.com once its format characters are removed", (raw) =>
    expect(normalizeEmail(raw)).toEqual({ ok: true, value: "bob@x.com" }),
  );
  it("removes format characters from phones and external ids too", () => {
    expect(normalizePhone("+1 555\u200B123 4567")).toEqual({ ok: true, value: "+15551234567" });
    expect(normalizeExternalId("acct\u200D_42\u200E")).toEqual({ ok: true, value: "acct_42" });
  });
  it("refuses control characters and lone surrogates instead of removing them", () => {
    for (const raw of ["bob\u0000@x.com", "bob@x.com\n", "bob\u0085@x.com", "bob\uD800@x.com"]) {
      expect(normalizeEmail(raw).ok).toBe(false);
    }
    expect(normalizeExternalId("acct\t42").ok).toBe(false);
    expect(normalizePhone("+15551234567\u0000").ok).toBe(false);
  });
  it("an id of format characters only is empty", () => {
    expect(normalizeExternalId("\u200B\u200C").ok).toBe(false);
  });
});

describe("normalizeAnonymousId (issue 15)", () => {
  it("trims, removes format characters and keeps case, like an external_id", () => {
    expect(normalizeAnonymousId(" 7f3c\u200B-Device ")).toEqual({ ok: true, value: "7f3c-Device" });
  });
  it("refuses empty, over-long and control characters", () => {
    expect(normalizeAnonymousId(" \u200B ").ok).toBe(false);
    expect(normalizeAnonymousId("a".repeat(256)).ok).toBe(false);
    expect(normalizeAnonymousId("a".repeat(255)).ok).toBe(true);
    expect(normalizeAnonymousId("anon\u0000").ok).toBe(false);
    expect(normalizeAnonymousId("anon\n").ok).toBe(false);
  });
});

describe("partitionKey", () => {
  it("keys by the highest-priority identifier", () => {
    expect(partitionKey("b", { email: "a@x.io", phone: "+15551234567" }, "e")).toBe("b:email:a@x.io");
    expect(partitionKey("b", { external_id: "acct_42", email: "a@x.io" }, "e")).toBe("b:ext:acct_42");
    expect(partitionKey("b", {}, "e1")).toBe("b:event:e1");
  });
  it("an anonymous_id is the lowest priority: the key only of an event that carries nothing else", () => {
    expect(partitionKey("b", { anonymous_id: "dev-1" }, "e")).toBe("b:anon:dev-1");
    expect(partitionKey("b", { phone: "+15551234567", anonymous_id: "dev-1" }, "e")).toBe(
      "b:phone:+15551234567",
    );
    expect(partitionKey("b", { external_id: "u1", anonymous_id: "dev-1" }, "e")).toBe("b:ext:u1");
  });
});

describe("suppressionHash", () => {
  const business = "0b0f8a3e-6d5c-4f7e-9a59-2f1d3c4b5a69";
  it("is a keyed SHA-256 per business, type and value: another secret, business or type gives another hash", () => {
    const hash = suppressionHash("secret-a-0123456789", business, "email", "p@example.com");
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(suppressionHash("secret-a-0123456789", business.toUpperCase(), "email", "p@example.com")).toBe(
      hash,
    );
    for (const other of [
      suppressionHash("secret-b-0123456789", business, "email", "p@example.com"),
      suppressionHash(
        "secret-a-0123456789",
        "1b0f8a3e-6d5c-4f7e-9a59-2f1d3c4b5a69",
        "email",
        "p@example.com",
      ),
      suppressionHash("secret-a-0123456789", business, "external_id", "p@example.com"),
    ]) {
      expect(other).not.toBe(hash);
    }
  });

  it("an event is checked under each identifier, and an alias's previous_id as anonymous_id and external_id", () => {
    const secret = "secret-a-0123456789";
    const entries = eventSuppressionEntries(secret, business, {
      email: "p@example.com",
      previous_id: "old-1",
    });
    expect(entries).toEqual([
      {
        type: "email",
        value: "p@example.com",
        hash: suppressionHash(secret, business, "email", "p@example.com"),
      },
      {
        type: "anonymous_id",
        value: "old-1",
        hash: suppressionHash(secret, business, "anonymous_id", "old-1"),
      },
      {
        type: "external_id",
        value: "old-1",
        hash: suppressionHash(secret, business, "external_id", "old-1"),
      },
    ]);
    expect(eventSuppressionEntries(secret, business, {})).toEqual([]);
  });
});
