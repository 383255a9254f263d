import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeTrigger } from "./decode-trigger.ts";

const header = fc.oneof(
  fc.string({ unit: "binary" }),
  fc.uuid(),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
  fc.constant(undefined),
);

describe("decodeTrigger", () => {
  it("reads contact id (key), business (header), type and event id; on contact changes, creations and merges", () => {
    const [contact, business, event] = [randomUUID(), randomUUID(), randomUUID()];
    const applied = decodeTrigger("events", {
      key: Buffer.from(contact),
      headers: { business_id: Buffer.from(business), type: Buffer.from("purchase"), id: Buffer.from(event) },
      value: Buffer.from("{}"),
    });
    expect(applied).toMatchObject({
      ok: true,
      businessId: business,
      trigger: {
        contactId: contact,
        cause: { cause: "event", eventId: event },
        eventTypes: new Set(["purchase"]),
      },
    });
    const merged = decodeTrigger("contacts", {
      key: Buffer.from(contact.toUpperCase()),
      headers: { business_id: business, type: "contact.merged_away" },
      value: null,
    });
    expect(merged).toMatchObject({
      ok: true,
      trigger: { contactId: contact, cause: { cause: "merge" }, all: true },
    });
    // a change of the contact's fields: the segments reading one of changed_fields (non-strings ignored)
    const updated = decodeTrigger("contacts", {
      key: Buffer.from(contact),
      headers: { business_id: business, type: "contact.updated" },
      value: Buffer.from(
        JSON.stringify({ cause_event_id: event, changed_fields: ["email", "traits.plan", 7] }),
      ),
    });
    expect(updated).toMatchObject({
      ok: true,
      trigger: { fields: new Set(["email", "traits.plan"]), cause: { cause: "contact", eventId: event } },
    });
    // without the list nothing says what changed: skipped with a reason (a malformed message, warned)
    const unsaid = decodeTrigger("contacts", {
      key: Buffer.from(contact),
      headers: { business_id: business, type: "contact.updated" },
      value: Buffer.from(JSON.stringify({ cause_event_id: event })),
    });
    expect(unsaid).toMatchObject({ ok: false });
    expect("expected" in unsaid && unsaid.expected).toBeFalsy();
    // an erasure deleted the memberships with the contact: not a trigger, by design
    const erased = decodeTrigger("contacts", {
      key: Buffer.from(contact),
      headers: { business_id: business, type: "contact.erased" },
      value: Buffer.from("{}"),
    });
    expect(erased).toMatchObject({ ok: false, expected: true });
    // a new contact: every segment (a rule true for an empty history must enter it)
    const created = decodeTrigger("contacts", {
      key: Buffer.from(contact),
      headers: { business_id: business, type: "contact.created" },
      value: Buffer.from(JSON.stringify({ cause_event_id: event })),
    });
    expect(created).toMatchObject({
      ok: true,
      trigger: { all: true, cause: { cause: "event", eventId: event } },
    });
  });

  it("never throws on arbitrary keys, headers and values; accepts only a uuid key and a uuid business", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("events" as const, "contacts" as const),
        fc.option(
          fc.oneof(fc.uuid(), fc.string({ unit: "binary" })).map((s) => Buffer.from(s)),
          { nil: null },
        ),
        fc.dictionary(fc.constantFrom("business_id", "type", "id", "x"), header),
        fc.option(
          fc
            .oneof(
              fc.jsonValue().map((v) => JSON.stringify(v)),
              fc.string({ unit: "binary" }),
            )
            .map((s) => Buffer.from(s)),
          { nil: null },
        ),
        (source, key, headers, value) => {
          const decoded = decodeTrigger(source, { key, headers: headers as never, value });
          if (decoded.ok) {
            expect(decoded.trigger.contactId).toMatch(/^[0-9a-f-]{36}$/);
            expect(decoded.businessId).toMatch(/^[0-9a-f-]{36}$/);
          } else expect(decoded.reason).toBeTruthy();
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 300) },
    );
  });
});
