import { decodeFramedJson } from "@crm/kafka";
import { SchemaRegistryClient } from "@crm/schema-registry";
import type { RawEventV1 } from "@crm/schemas";
import { describe, expect, it } from "vitest";
import { RawEventEncoder } from "./raw-event-encoder.ts";

const event = { event_id: "e1", business_id: "b1", type: "t" } as RawEventV1;

describe("RawEventEncoder", () => {
  it("frames values with the registered schema id", async () => {
    const registry = {
      lookup: async () => undefined,
      register: async (subject: string) => (subject === "events.raw.v1-value" ? 7 : -1),
    } as unknown as SchemaRegistryClient;
    const encoder = new RawEventEncoder(registry);
    await encoder.start();
    const bytes = encoder.encode(event) as Buffer;
    expect(decodeFramedJson(bytes)).toEqual({ schemaId: 7, value: event });
  });

  it("produces plain JSON while the registry is unreachable, and does not block start", async () => {
    const errors: unknown[] = [];
    const encoder = new RawEventEncoder(
      new SchemaRegistryClient("http://127.0.0.1:9/apis/ccompat/v7", { timeoutMs: 500 }),
      (error) => errors.push(error),
    );
    await encoder.start();
    encoder.stop();
    expect(encoder.id).toBeUndefined();
    expect(encoder.encode(event)).toBe(JSON.stringify(event));
    expect(errors).toHaveLength(1);
  });
});
