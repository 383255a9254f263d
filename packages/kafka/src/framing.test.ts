import { describe, expect, it } from "vitest";
import { decodeFramedJson, encodeFramedJson } from "./framing.ts";

describe("schema-registry framing", () => {
  it("writes magic byte 0, the schema id big-endian, then the JSON", () => {
    const bytes = encodeFramedJson(0x01020304, { a: 1 });
    expect([...bytes.subarray(0, 5)]).toEqual([0, 1, 2, 3, 4]);
    expect(bytes.subarray(5).toString("utf8")).toBe('{"a":1}');
  });

  it("round-trips a value and its schema id", () => {
    const value = { event_id: "e", props: { nested: ["x", 2, null] }, name: "Zoë" };
    expect(decodeFramedJson(encodeFramedJson(42, value))).toEqual({ schemaId: 42, value });
  });

  it("accepts plain JSON without a frame (messages from before the switch)", () => {
    expect(decodeFramedJson(Buffer.from('{"a":1}'))).toEqual({ schemaId: undefined, value: { a: 1 } });
    expect(decodeFramedJson(Buffer.from(' \n{"a":1}'))).toEqual({ schemaId: undefined, value: { a: 1 } });
  });

  it("refuses bytes that are neither", () => {
    expect(() => decodeFramedJson(Buffer.from([0, 0, 1]))).toThrow(/truncated/);
    expect(() => decodeFramedJson(Buffer.from([0, 0, 0, 0, 1, 0x7b]))).toThrow(SyntaxError);
    expect(() => decodeFramedJson(Buffer.from("not json"))).toThrow(SyntaxError);
  });

  it("refuses a schema id that does not fit 4 bytes", () => {
    expect(() => encodeFramedJson(2 ** 32, {})).toThrow(RangeError);
    expect(() => encodeFramedJson(-1, {})).toThrow(RangeError);
  });
});
