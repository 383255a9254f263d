import { hash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson, checkIdempotencyKey, keyedEventId, uuidV5 } from "./idempotency.ts";

const runs = Number(process.env.FUZZ_RUNS ?? 200);

// The first forms of the hash inputs, which records stored before a rewrite were made with: the fast forms must
// give the same bytes, or a retry within the retention would be a 422 or get another event id.
function firstCanonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(firstCanonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${firstCanonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
function firstUuidV5(name: string, namespace: Buffer): string {
  const bytes = hash("sha1", Buffer.concat([namespace, Buffer.from(name, "utf8")]), "buffer").subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

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

  it("canonical JSON and event ids are byte for byte what the first forms gave, for any JSON and any name", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const parsed = JSON.parse(JSON.stringify(value)) as unknown;
        expect(canonicalJson(parsed)).toBe(firstCanonicalJson(parsed));
      }),
      { numRuns: runs },
    );
    const namespace = Buffer.from("6f1c0b8e5d2a4f7b9e3c1a0d8b7f6e5c", "hex");
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), fc.string({ maxLength: 3_000 })), (name) => {
        expect(uuidV5(name)).toBe(firstUuidV5(name, namespace));
      }),
      { numRuns: runs },
    );
    expect(uuidV5("x".repeat(5_000))).toBe(firstUuidV5("x".repeat(5_000), namespace));
  });

  it("accepts 1..255 printable ASCII characters as a key, nothing else", () => {
    expect(checkIdempotencyKey("order-42 / retry", ["k"])).toBe("order-42 / retry");
    for (const bad of ["", "x".repeat(256), "naïve", "tab\there", 42, null]) {
      expect(() => checkIdempotencyKey(bad, ["k"])).toThrow(/printable ASCII/);
    }
  });
});
