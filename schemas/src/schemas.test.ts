import { describe, expect, it } from "vitest";
import {
  CONTACT_UPDATED_V1_CONTACT_FIELDS,
  CONTACT_UPDATED_V1_FIELDS,
  RAW_EVENT_V1_FIELDS,
  SEGMENT_MEMBERSHIP_V1_FIELDS,
  TOPIC_SCHEMAS,
} from "./index.ts";

type ObjectSchema = { required?: string[]; properties?: Record<string, ObjectSchema> };

function fieldsOf(schema: ObjectSchema): Record<string, "required" | "optional"> {
  const required = new Set(schema.required ?? []);
  return Object.fromEntries(
    Object.keys(schema.properties ?? {}).map((name) => [name, required.has(name) ? "required" : "optional"]),
  );
}

// The TypeScript interfaces are pinned to these maps by tsc; here the JSON Schemas are pinned to the same maps.
describe("schemas and TypeScript types agree", () => {
  it("events.raw.v1", () => {
    expect(fieldsOf(TOPIC_SCHEMAS["events.raw.v1"] as ObjectSchema)).toEqual(RAW_EVENT_V1_FIELDS);
  });

  it("contact.updated.v1", () => {
    const schema = TOPIC_SCHEMAS["contact.updated.v1"] as ObjectSchema;
    expect(fieldsOf(schema)).toEqual(CONTACT_UPDATED_V1_FIELDS);
    expect(fieldsOf(schema.properties!.contact!)).toEqual(CONTACT_UPDATED_V1_CONTACT_FIELDS);
  });

  it("segment.membership.v1", () => {
    expect(fieldsOf(TOPIC_SCHEMAS["segment.membership.v1"] as ObjectSchema)).toEqual(
      SEGMENT_MEMBERSHIP_V1_FIELDS,
    );
  });

  it("every required field is declared", () => {
    for (const schema of Object.values(TOPIC_SCHEMAS) as ObjectSchema[]) {
      for (const name of schema.required ?? []) expect(schema.properties).toHaveProperty(name);
    }
  });
});
