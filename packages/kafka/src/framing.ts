/**
 * The Confluent wire format that Apicurio's ccompat API and every Confluent client share: one magic byte 0, the
 * schema id as a 4-byte big-endian integer, then the serialized value (JSON text here). Byte for byte what
 * @kafkajs/confluent-schema-registry writes and reads (registry.integration.test.ts checks it against the library).
 *
 * It lives here, beside the Kafka client, because every reader of a topic needs it synchronously and without a
 * registry round trip: the worker (which validates by content against the published schema, see
 * services/resolver-worker/src/decode-event.ts), test probes, the bench and `npm run tail`, which must also show
 * values that fail the schema (a DLQ holds exactly those). Registration, lookups and validating encode/decode are
 * the library's, through @crm/schema-registry.
 */
export const MAGIC_BYTE = 0;
const HEADER_BYTES = 5;

/** Frames `value` as JSON under `schemaId`. */
export function encodeFramedJson(schemaId: number, value: unknown): Buffer {
  if (!Number.isInteger(schemaId) || schemaId < 0 || schemaId > 0xffffffff) {
    throw new RangeError(`schema id out of range: ${schemaId}`);
  }
  const json = Buffer.from(JSON.stringify(value), "utf8");
  const out = Buffer.allocUnsafe(HEADER_BYTES + json.length);
  out.writeUInt8(MAGIC_BYTE, 0);
  out.writeUInt32BE(schemaId, 1);
  json.copy(out, HEADER_BYTES);
  return out;
}

export interface DecodedJson {
  /** The writer's schema id, or undefined for a plain JSON value (no frame). */
  schemaId: number | undefined;
  value: unknown;
}

/**
 * Decodes a framed JSON value, and also a plain JSON value without a frame (messages written before producers
 * switched to the registry framing). JSON text never starts with byte 0, so the two cannot be confused.
 * Throws a SyntaxError when the bytes are neither.
 */
export function decodeFramedJson(bytes: Buffer | Uint8Array): DecodedJson {
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  if (buffer.length > 0 && buffer[0] === MAGIC_BYTE) {
    if (buffer.length < HEADER_BYTES) throw new SyntaxError("truncated schema-registry frame");
    return {
      schemaId: buffer.readUInt32BE(1),
      value: JSON.parse(buffer.subarray(HEADER_BYTES).toString("utf8")),
    };
  }
  return { schemaId: undefined, value: JSON.parse(buffer.toString("utf8")) };
}
