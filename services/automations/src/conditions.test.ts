import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { contactPasses, passes, propsPass } from "./conditions.ts";

describe("trigger filters (segment rule language on one contact or event)", () => {
  const contact = {
    email: "ann@vip.example",
    first_seen_at: new Date(Date.now() - 3 * 86_400_000).toISOString(),
    traits: { plan: "pro", seats: 12 },
  };

  it("evaluates contact conditions with all/any/not", () => {
    expect(contactPasses({ contact: { field: "email", op: "contains", value: "@vip." } }, contact)).toBe(
      true,
    );
    expect(contactPasses({ contact: { field: "traits.seats", op: ">=", value: 10 } }, contact)).toBe(true);
    expect(
      contactPasses({ contact: { field: "traits.plan", op: "in", value: ["free", "pro"] } }, contact),
    ).toBe(true);
    expect(
      contactPasses({ contact: { field: "first_seen_at", op: "within_last_days", value: 7 } }, contact),
    ).toBe(true);
    expect(
      contactPasses({ contact: { field: "first_seen_at", op: "within_last_days", value: 1 } }, contact),
    ).toBe(false);
    expect(contactPasses({ not: { contact: { field: "phone", op: "exists" } } }, contact)).toBe(true);
    expect(
      contactPasses(
        {
          any: [
            { contact: { field: "name", op: "=", value: "x" } },
            { contact: { field: "traits.plan", op: "=", value: "pro" } },
          ],
        },
        contact,
      ),
    ).toBe(true);
    // an absent field is unknown: only `exists` (negated) says anything about it
    expect(contactPasses({ contact: { field: "name", op: "!=", value: "x" } }, contact)).toBe(false);
    expect(contactPasses(null, contact)).toBe(true);
  });

  it("property filters: all must pass; a mix of number and string never compares", () => {
    expect(propsPass([{ property: "amount", op: ">", value: 500 }], { amount: 900 })).toBe(true);
    expect(propsPass([{ property: "amount", op: ">", value: 500 }], { amount: "900" })).toBe(false);
    expect(propsPass([{ property: "amount", op: ">", value: 500 }], {})).toBe(false);
    expect(propsPass([{ property: "toString", op: "exists" }], {})).toBe(false);
    expect(propsPass(undefined, {})).toBe(true);
  });

  it("never throws, whatever the value and operand", () => {
    fc.assert(
      fc.property(
        fc.jsonValue(),
        fc.constantFrom(
          "=",
          "!=",
          "<",
          ">=",
          "contains",
          "starts_with",
          "in",
          "exists",
          "before",
          "after",
          "within_last_days",
          "?",
        ),
        fc.jsonValue(),
        (value, op, expected) => {
          expect(typeof passes(value, op, expected)).toBe("boolean");
        },
      ),
      { numRuns: 300 },
    );
  });
});
