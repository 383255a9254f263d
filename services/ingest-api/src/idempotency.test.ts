import { describe, expect, it } from "vitest";
import { canonicalJson, checkIdempotencyKey, keyedEventId, uuidV5 } from "./idempotency.ts";

describe("idempotency helpers", () => {
  it("hashes bodies by canonical JSON: key order does not matter, values do", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } })).toBe(
      canonicalJson({ a: { c: null, d: [1, { x: 1, y: 2 }] }, b: 1 }),
    );
    expect(canonicalJson({ a: 1 })).not.toBe(canonicalJson({ a: "1" }));
  });

  it("derives RFC 4122 v5 ids (known vector) and one event id per (business, caller, key)", () => {
    const dns = Buffer.from("6ba7b8109dad11d180b400c04fd430c8", "hex");
    expect(uuidV5("www.example.com", dns)).toBe("2ed6657d-e927-568b-95e1-2665a8aea6a2");
    const id = keyedEventId("b1", "user:u1", "k");
    expect(keyedEventId("b1", "user:u1", "k")).toBe(id);
    expect(keyedEventId("b1", "user:u2", "k")).not.toBe(id);
    expect(keyedEventId("b2", "user:u1", "k")).not.toBe(id);
  });

  it("accepts 1..255 printable ASCII characters as a key, nothing else", () => {
    expect(checkIdempotencyKey("order-42 / retry", ["k"])).toBe("order-42 / retry");
    for (const bad of ["", "x".repeat(256), "naïve", "tab\there", 42, null]) {
      expect(() => checkIdempotencyKey(bad, ["k"])).toThrow(/printable ASCII/);
    }
  });
});
