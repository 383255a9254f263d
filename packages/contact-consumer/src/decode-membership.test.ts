import { randomUUID } from "node:crypto";
import { encodeFramedJson, type KafkaMessage } from "@crm/kafka";
import { describe, expect, it } from "vitest";
import { decodeMembershipChange } from "./decode-membership.ts";

const value = {
  business_id: randomUUID(),
  segment_id: randomUUID(),
  segment_version: 2,
  contact_id: randomUUID(),
  change: "entered",
  at: "2026-11-27T10:00:00.000Z",
  cause: "event",
  cause_event_id: randomUUID(),
};
const message = (v: unknown, headers: Record<string, string> = { id: randomUUID() }): KafkaMessage =>
  ({
    key: Buffer.from(value.contact_id),
    value: Buffer.isBuffer(v) ? v : Buffer.from(JSON.stringify(v)),
    headers,
    offset: "7",
    timestamp: "0",
  }) as unknown as KafkaMessage;

describe("decodeMembershipChange", () => {
  it("decodes a plain or framed value with its outbox id, and drops fields of a newer schema version", () => {
    const id = randomUUID();
    const plain = decodeMembershipChange(
      3,
      message({ ...value, region: "eu" }, { id, type: "segment.entered" }),
    );
    expect(plain).toMatchObject({
      ok: true,
      change: { id, type: "segment.entered", contactId: value.contact_id },
    });
    expect(plain.ok && (plain.change.value as { region?: string }).region).toBeUndefined();
    const framed = decodeMembershipChange(3, message(encodeFramedJson(4, value)));
    expect(framed).toMatchObject({ ok: true, change: { type: "segment.entered", value } });
  });

  it("refuses a value that breaks the contract, or a message without an outbox id", () => {
    expect(decodeMembershipChange(0, message({ ...value, change: "joined" })).ok).toBe(false);
    expect(decodeMembershipChange(0, message({ ...value, segment_version: 0 })).ok).toBe(false);
    expect(decodeMembershipChange(0, message(value, {}))).toEqual({ ok: false, errors: ["no id header"] });
    expect(decodeMembershipChange(0, message(Buffer.from("{")))).toMatchObject({ ok: false });
  });
});
