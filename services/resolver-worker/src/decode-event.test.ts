import { randomUUID } from "node:crypto";
import { NonRetriableError } from "@crm/errors";
import { encodeFramedJson } from "@crm/kafka";
import { describe, expect, it } from "vitest";
import { decodeRawEvent } from "./decode-event.ts";

const valid = {
  event_id: randomUUID(),
  business_id: randomUUID(),
  type: "signup",
  contact: { email: " Alice@Example.COM ", phone: "+15551234567", external_id: " acct_42 " },
  props: { plan: "pro" },
  occurred_at: "2026-11-26T10:00:00Z",
  received_at: "2026-11-26T10:00:01Z",
  source: { kind: "user", id_hash: "abc" },
};
const bytes = (value: unknown) => Buffer.from(JSON.stringify(value));

describe("decodeRawEvent", () => {
  it("normalizes identifiers again, so a direct producer cannot split one person", () => {
    expect(decodeRawEvent(bytes(valid)).contact).toEqual({
      email: "alice@example.com",
      phone: "+15551234567",
      external_id: "acct_42",
    });
  });

  it("normalizes anonymous_id and previous_id like external_id and keeps traits as sent (issue 15)", () => {
    const contact = {
      anonymous_id: " dev\u200B-1 ",
      previous_id: " anon-0 ",
      traits: { plan: "pro", seats: 3 },
    };
    expect(decodeRawEvent(bytes({ ...valid, contact })).contact).toEqual({
      anonymous_id: "dev-1",
      previous_id: "anon-0",
      traits: { plan: "pro", seats: 3 },
    });
  });

  it("dead-letters traits over the edge's bounds: 200 keys (schema) and 16 KiB (code)", () => {
    const many = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, i]));
    expect(() => decodeRawEvent(bytes({ ...valid, contact: { traits: many } }))).toThrow(
      /contact\/traits must NOT have more than 200 properties/,
    );
    const large = { big: "x".repeat(16 * 1024) };
    expect(() => decodeRawEvent(bytes({ ...valid, contact: { traits: large } }))).toThrow(
      /contact.traits must be at most 16384 bytes/,
    );
    expect(() => decodeRawEvent(bytes({ ...valid, contact: { traits: [1] } }))).toThrow(NonRetriableError);
    expect(() => decodeRawEvent(bytes({ ...valid, contact: { anonymous_id: "a\u0000" } }))).toThrow(
      /anonymous_id/,
    );
    expect(() => decodeRawEvent(bytes({ ...valid, contact: { anonymous_id: "" } }))).toThrow(/anonymous_id/);
  });

  it("accepts a schema-registry framed value", () => {
    const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 7]), bytes(valid)]);
    expect(decodeRawEvent(framed).event_id).toBe(valid.event_id);
  });

  it("validates by content whatever schema id frames it, and drops fields the schema does not declare", () => {
    const framed = (id: number, value: unknown) => encodeFramedJson(id, value);
    expect(decodeRawEvent(framed(123_456, valid)).event_id).toBe(valid.event_id);
    expect(() => decodeRawEvent(framed(1, { ...valid, type: "" }))).toThrow(
      /does not match events.raw.v1: \/type/,
    );
    const extra = decodeRawEvent(bytes({ ...valid, region: "eu", contact: { ...valid.contact, fax: "1" } }));
    expect(extra).not.toHaveProperty("region");
    expect(extra.contact).not.toHaveProperty("fax");
  });

  it.each([
    ["an empty value", null, /empty/],
    ["not JSON", Buffer.from("not json {"), /not JSON/],
    ["a wrong shape", bytes({ ...valid, event_id: "nope" }), /event_id/],
    ["an invalid email", bytes({ ...valid, contact: { email: "not-an-email" } }), /contact.email/],
    ["an impossible phone", bytes({ ...valid, contact: { phone: "+9991234567" } }), /contact.phone/],
    // What the edge refuses (@crm/storable), refused again for messages written straight to the topic.
    [
      "a NUL in the name",
      bytes({ ...valid, contact: { name: "M\u0000" } }),
      /contact.name: string contains a NUL/,
    ],
    ["a NUL in props", bytes({ ...valid, props: { a: "\u0000" } }), /props.a/],
    ["a lone surrogate in type", bytes({ ...valid, type: "x\ud800" }), /type: string is not well-formed/],
    ["occurred_at in year 0000", bytes({ ...valid, occurred_at: "0000-01-01T00:00:00Z" }), /occurred_at/],
    [
      "props nested 10,000 deep",
      Buffer.from(
        JSON.stringify(valid).replace('{"plan":"pro"}', `${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}`),
      ),
      /nested deeper/,
    ],
    ["a type that is a number", bytes({ ...valid, type: 42 }), /type/],
    // What the schema's formats accept but Postgres cannot store as meant.
    ["an event_id in URN form", bytes({ ...valid, event_id: `urn:uuid:${valid.event_id}` }), /event_id/],
    ["a leap second", bytes({ ...valid, received_at: "2026-11-26T23:59:60Z" }), /received_at/],
    ["a truncated frame", Buffer.from([0, 0, 1]), /not JSON/],
    ["a missing source", bytes({ ...valid, source: undefined }), /source/],
  ])("rejects %s as non-retriable", (_what, value, message) => {
    expect(() => decodeRawEvent(value)).toThrow(NonRetriableError);
    expect(() => decodeRawEvent(value)).toThrow(message);
  });
});
