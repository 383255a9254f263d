import type { ICustomPartitioner } from "kafkajs";

/**
 * Kafka's murmur2 (the Java client's `Utils.murmur2`) on 32-bit integer arithmetic. kafkajs computes the same
 * hash with a 64-bit Long object per step, which was about a tenth of the API's CPU in batches of 100.
 */
export function murmur2(key: Buffer): number {
  const m = 0x5bd1e995;
  const length = key.length;
  let h = 0x9747b28c ^ length;
  const length4 = length & ~3;
  for (let i = 0; i < length4; i += 4) {
    let k = key[i]! | (key[i + 1]! << 8) | (key[i + 2]! << 16) | (key[i + 3]! << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  // the tail bytes, as murmur2's fall-through switch folds them
  const tail = length & 3;
  if (tail === 3) h ^= key[length4 + 2]! << 16;
  if (tail >= 2) h ^= key[length4 + 1]! << 8;
  if (tail >= 1) {
    h ^= key[length4]!;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/**
 * The partitioner of kafkajs's DefaultPartitioner (and Java's default for keyed records): an explicit partition
 * wins, a key goes to `murmur2(key) & 0x7fffffff % partitions`, keyless messages go round robin over partitions
 * with a leader. Same partitions as kafkajs, cheaper.
 */
export const FastDefaultPartitioner: ICustomPartitioner = () => {
  const counters = new Map<string, number>();
  return ({ topic, partitionMetadata, message }) => {
    if (message.partition !== null && message.partition !== undefined) return message.partition;
    if (message.key !== null && message.key !== undefined) {
      const key = Buffer.isBuffer(message.key) ? message.key : Buffer.from(String(message.key));
      return (murmur2(key) & 0x7fffffff) % partitionMetadata.length;
    }
    const available = partitionMetadata.filter((p) => p.leader >= 0);
    const next = ((counters.get(topic) ?? Math.floor(Math.random() * 2 ** 31)) + 1) & 0x7fffffff;
    counters.set(topic, next);
    if (available.length > 0) return available[next % available.length]!.partitionId;
    return next % partitionMetadata.length;
  };
};
