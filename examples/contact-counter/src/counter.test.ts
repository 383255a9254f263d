import type { ContactChange } from "@crm/contact-consumer";
import { describe, expect, it } from "vitest";
import { ContactCounter } from "./counter.ts";

function change(businessId: string, kind: ContactChange["value"]["change"]): ContactChange {
  return { businessId, value: { change: kind } } as ContactChange;
}

describe("ContactCounter", () => {
  it("counts created contacts per business and takes merged-away and erased ones off", () => {
    const counter = new ContactCounter();
    for (const kind of ["created", "created", "updated", "created", "merged", "merged_away"] as const) {
      counter.apply(change("a", kind));
    }
    counter.apply(change("b", "created"));
    counter.apply(change("b", "created"));
    counter.apply(change("b", "erased"));
    expect(counter.snapshot()).toEqual({ a: 2, b: 1 });
    expect(counter.count("nobody")).toBe(0);
  });
});
