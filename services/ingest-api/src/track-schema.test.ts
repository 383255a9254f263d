import { HttpError } from "@crm/errors";
import { describe, expect, it } from "vitest";
import { normalizeContact } from "./ingest.ts";
import { TrackBody } from "./track-schema.ts";

// The edge's rules for what issue 15 adds to `contact`: anonymous_id and previous_id (identifiers, normalized by
// @crm/identity) and traits (a bounded JSON object).
const issues = (body: unknown) => {
  const parsed = TrackBody.safeParse(body);
  return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
};

describe("contact.anonymous_id, previous_id and traits on /v1/track", () => {
  it("accepts them and normalizes the ids like an external_id", () => {
    const body = TrackBody.parse({
      type: "page_viewed",
      contact: { anonymous_id: " dev\u200B-1 ", previous_id: "anon-0", traits: { plan: "pro", seats: 3 } },
    });
    expect(normalizeContact(body.contact, "US")).toEqual({
      anonymous_id: "dev-1",
      previous_id: "anon-0",
      traits: { plan: "pro", seats: 3 },
    });
  });

  it("refuses an empty, over-long or control-character anonymous_id, naming the field", () => {
    for (const anonymous_id of [" ", "\u200B", "a".repeat(256), "dev\t1", "dev\u0000"]) {
      const body = TrackBody.parse({ type: "t", contact: { anonymous_id } });
      let error: unknown;
      try {
        normalizeContact(body.contact, "US", ["events", "2"]);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(HttpError);
      expect((error as HttpError).status).toBe(400);
      expect((error as HttpError).message).toMatch(/^events\.2\.contact\.anonymous_id: /);
    }
  });

  it("refuses traits over 200 keys or 16 KiB, an empty trait name, and traits that are not an object", () => {
    const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    expect(issues({ type: "t", contact: { traits: keys(200) } })).toEqual([]);
    expect(issues({ type: "t", contact: { traits: keys(201) } })).toEqual([
      "contact.traits: traits must have at most 200 keys",
    ]);
    expect(issues({ type: "t", contact: { traits: { k: "x".repeat(16 * 1024) } } })).toEqual([
      "contact.traits: traits must be at most 16384 bytes as JSON",
    ]);
    expect(issues({ type: "t", contact: { traits: { "": 1 } } })[0]).toMatch(/^contact\.traits\..*key/i);
    expect(issues({ type: "t", contact: { traits: ["a"] } })[0]).toMatch(/traits must be a JSON object/);
  });
});
