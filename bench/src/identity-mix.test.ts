import { describe, expect, it } from "vitest";
import { benchEmail, benchPhone, CYCLE, identityFor } from "./identity-mix.ts";

describe("identity mix", () => {
  const events = Array.from({ length: CYCLE * 50 }, (_, seq) => identityFor(3, seq, 2));

  it("is 50% new, 45% repeat, 5% merges once warmed up", () => {
    const steady = events.slice(CYCLE * 2);
    const share = (kind: string) => steady.filter((event) => event.kind === kind).length / steady.length;
    expect(share("new")).toBeCloseTo(0.5);
    expect(share("repeat")).toBeCloseTo(0.45);
    expect(share("merge")).toBeCloseTo(0.05);
  });

  it("merges an email-only and a phone-only contact created mergeLagCycles earlier", () => {
    const merge = identityFor(3, CYCLE * 10 + 19, 2);
    expect(merge).toEqual({
      kind: "merge",
      contact: { email: benchEmail(3, 8, 0), phone: benchPhone(3, 8) },
    });
    expect(identityFor(3, CYCLE * 8, 2).contact).toEqual({ email: benchEmail(3, 8, 0), name: "Bench 3.8.0" });
    expect(identityFor(3, CYCLE * 8 + 1, 2).contact).toEqual({ phone: benchPhone(3, 8) });
  });

  it("repeats identifiers created one cycle earlier", () => {
    const created = new Set(
      events.filter((e) => e.kind === "new").map((e) => e.contact.email ?? e.contact.phone),
    );
    for (const event of events.filter((e) => e.kind === "repeat"))
      expect(created.has(event.contact.email)).toBe(true);
  });

  it("makes phones that look like US numbers in E.164", () => {
    expect(benchPhone(0, 0)).toBe("+12000000000");
    expect(benchPhone(79, 9_999_999)).toMatch(/^\+1[2-9]\d{9}$/);
  });
});
