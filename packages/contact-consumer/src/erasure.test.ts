import { encodeFramedJson, type KafkaMessage } from "@crm/kafka";
import { describe, expect, it } from "vitest";
import { erasureOf } from "./consumer.ts";
import { decodeContactChange } from "./decode-change.ts";

// The kit's erase handler (issue 18): an `erased` change names every contact id to forget, and only that change.
describe("erasureOf", () => {
  const base = {
    contact_id: "5b1f0d6e-8a44-4c1e-9d8e-0c7a7a3f6d21",
    business_id: "0b0f8a3e-6d5c-4f7e-9a59-2f1d3c4b5a69",
    version: 4,
    changed_fields: [],
    contact: {},
    identities: [],
    cause_event_id: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    occurred_at: "2026-11-27T12:00:00.000Z",
  };
  const message = (value: object): KafkaMessage => ({
    key: Buffer.from(base.contact_id),
    value: encodeFramedJson(3, value),
    headers: {
      id: Buffer.from("9f1c1a3e-0000-4000-8000-000000000001"),
      business_id: Buffer.from(base.business_id),
    },
    offset: "7",
    timestamp: "0",
    attributes: 0,
  });

  it("an erased change validates against the published schema and names the contact and those merged into it", () => {
    const merged = ["1a2b3c4d-0000-4000-8000-000000000002"];
    const decoded = decodeContactChange(0, message({ ...base, change: "erased", merged_from: merged }));
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    expect(erasureOf(decoded.change)).toMatchObject({
      businessId: base.business_id,
      contactIds: [base.contact_id, ...merged],
      erasureId: base.cause_event_id,
    });
  });

  it("any other change is not an erasure", () => {
    const decoded = decodeContactChange(0, message({ ...base, change: "updated" }));
    expect(decoded.ok && erasureOf(decoded.change)).toBeUndefined();
  });
});
