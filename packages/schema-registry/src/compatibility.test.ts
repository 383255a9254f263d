import { TOPIC_SCHEMAS } from "@crm/schemas";
import { describe, expect, it } from "vitest";
import { removedGuarantees } from "./compatibility.ts";
import { topicValidator } from "./validate.ts";

const schema = TOPIC_SCHEMAS["contact.updated.v1"];
const copy = () =>
  structuredClone(schema) as unknown as {
    required: string[];
    properties: Record<string, Record<string, unknown>>;
  };

describe("removedGuarantees", () => {
  it("finds nothing between a schema and itself, or when an optional field is added", () => {
    expect(removedGuarantees(schema, schema)).toEqual([]);
    const added = copy();
    added.properties.region = { type: "string" };
    expect(removedGuarantees(schema, added)).toEqual([]);
  });

  it("flags a required field that was removed or made optional", () => {
    const removed = copy();
    removed.required = removed.required.filter((f) => f !== "version");
    delete removed.properties.version;
    expect(removedGuarantees(schema, removed)).toEqual(["version: required field removed"]);
    const optional = copy();
    optional.required = optional.required.filter((f) => f !== "cause_event_id");
    expect(removedGuarantees(schema, optional)).toEqual(["cause_event_id: no longer required"]);
  });

  it("flags a changed type and a removed enum value, nested ones too", () => {
    const changed = copy();
    changed.properties.version = { type: "string" };
    changed.properties.change = { enum: ["created", "updated", "merged", "erased"] };
    const identities = changed.properties.identities as { items: { properties: Record<string, unknown> } };
    identities.items.properties.value = { type: "integer" };
    expect(removedGuarantees(schema, changed)).toEqual([
      'version: type changed from "integer" to "string"',
      "change: enum values removed: merged_away",
      'identities[].value: type changed from "string" to "integer"',
    ]);
  });
});

describe("topicValidator", () => {
  const validate = topicValidator("contact.updated.v1");
  const valid = {
    contact_id: "6f1c1a52-3b7e-4c50-9d0a-1f1f1f1f1f1f",
    business_id: "7f1c1a52-3b7e-4c50-9d0a-1f1f1f1f1f1f",
    version: 2,
    change: "updated",
    changed_fields: ["name"],
    contact: { email: "a@example.com", first_seen_at: "2026-11-26T10:00:00.123+00:00" },
    identities: [{ type: "email", value: "a@example.com" }],
    cause_event_id: "8f1c1a52-3b7e-4c50-9d0a-1f1f1f1f1f1f",
    occurred_at: "2026-11-26T10:00:00+00:00",
  };

  it("strictly refuses an undeclared field; a tolerant reader drops it", () => {
    expect(validate({ ...valid, region: "eu" })).toMatchObject({ ok: false });
    const tolerant = topicValidator("contact.updated.v1", { tolerant: true });
    expect(tolerant({ ...valid, region: "eu", contact: { ...valid.contact, company: "x" } })).toEqual({
      ok: true,
      value: valid,
    });
  });

  it("accepts a valid change and names every problem of an invalid one", () => {
    expect(validate(valid)).toEqual({ ok: true, value: valid });
    const result = validate({ ...valid, version: 0, change: "deleted", contact_id: "nope" });
    expect(result.ok).toBe(false);
    expect(result.ok ? [] : result.errors).toHaveLength(3);
  });
});
