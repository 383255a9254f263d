import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeContactUpdated, decodeEventApplied, decodeMembership } from "./decode-inputs.ts";

const bytes = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "null")),
  fc.string({ unit: "binary" }).map((s) => Buffer.from(s)),
  fc.constant(null),
);
const header = fc.oneof(fc.string({ unit: "binary", maxLength: 40 }), fc.uuid(), fc.constant(undefined));
const message = fc.record({
  key: fc.oneof(
    fc.uuid().map((s) => Buffer.from(s)),
    bytes,
  ),
  value: bytes,
  headers: fc.record({ id: header, type: header, business_id: header, occurred_at: header }),
});
const kafka = (m: {
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string | undefined>;
}) =>
  ({
    key: m.key,
    value: m.value,
    headers: Object.fromEntries(Object.entries(m.headers).filter(([, v]) => v !== undefined)),
    offset: "0",
    timestamp: "0",
    attributes: 0,
  }) as never;

describe("decoding the consumed topics", () => {
  it("never throws on hostile messages, and anything it accepts is a cause with uuids", () => {
    fc.assert(
      fc.property(message, (m) => {
        for (const decoded of [
          decodeContactUpdated(0, kafka(m)),
          decodeMembership(kafka(m)),
          decodeEventApplied(kafka(m)),
        ]) {
          if (decoded.ok) {
            expect(decoded.cause.businessId).toMatch(/^[0-9a-f-]{36}$/);
            expect(decoded.cause.contactId).toMatch(/^[0-9a-f-]{36}$/);
          } else expect(decoded.errors.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 300) },
    );
  });

  it("reads an applied event (props as an object or as a JSON string) and refuses props Postgres cannot store", () => {
    const headers = {
      id: randomUUID(),
      type: "purchase",
      business_id: randomUUID(),
      occurred_at: new Date().toISOString(),
    };
    const contact = randomUUID();
    for (const value of [JSON.stringify({ amount: 5 }), JSON.stringify(JSON.stringify({ amount: 5 }))]) {
      const decoded = decodeEventApplied(
        kafka({ key: Buffer.from(contact), value: Buffer.from(value), headers }),
      );
      expect(decoded).toMatchObject({
        ok: true,
        cause: { source: "event", contactId: contact, props: { amount: 5 } },
      });
    }
    const nul = decodeEventApplied(
      kafka({ key: Buffer.from(contact), value: Buffer.from('{"a":"\\u0000"}'), headers }),
    );
    expect(nul.ok).toBe(false);
  });

  it("a membership change's cause id is the same on redelivery and differs for another entry", () => {
    const value = {
      business_id: randomUUID(),
      segment_id: randomUUID(),
      segment_version: 2,
      contact_id: randomUUID(),
      change: "entered",
      at: "2026-11-27T10:00:00Z",
    };
    const decode = (v: object) =>
      decodeMembership(kafka({ key: null, value: Buffer.from(JSON.stringify(v)), headers: {} }));
    const first = decode(value);
    const again = decode(value);
    const later = decode({ ...value, at: "2026-11-27T11:00:00Z" });
    if (!first.ok || !again.ok || !later.ok) throw new Error("should decode");
    expect(again.cause.causeId).toBe(first.cause.causeId);
    expect(later.cause.causeId).not.toBe(first.cause.causeId);
  });
});
