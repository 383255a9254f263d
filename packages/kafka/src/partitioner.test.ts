import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { FastDefaultPartitioner, murmur2 } from "./partitioner.ts";

const require = createRequire(import.meta.url);
const kafkajsMurmur2 = require("kafkajs/src/producer/partitioners/default/murmur2.js") as (
  key: Buffer,
) => number;

describe("murmur2", () => {
  it("matches kafkajs's (Java-compatible) murmur2 on keys of every tail length", () => {
    for (let length = 0; length < 200; length++) {
      const key = randomBytes(length);
      expect(murmur2(key), `length ${length}`).toBe(kafkajsMurmur2(key));
    }
    // the key shape ingest-api produces
    const key = Buffer.from("0b6c1f0e-8a9e-4a8e-9a0c-2f0e7f6d4b1a:email:alice@example.com");
    expect(murmur2(key)).toBe(kafkajsMurmur2(key));
  });

  it("puts a keyed message on the partition kafkajs's DefaultPartitioner picks", () => {
    const partition = FastDefaultPartitioner()({
      topic: "t",
      partitionMetadata: Array.from({ length: 12 }, (_, partitionId) => ({
        partitionId,
        leader: 1,
        partitionErrorCode: 0,
        replicas: [1],
        isr: [1],
        offlineReplicas: [],
      })),
      message: { key: "b:email:alice@example.com", value: "x" },
    });
    expect(partition).toBe((kafkajsMurmur2(Buffer.from("b:email:alice@example.com")) & 0x7fffffff) % 12);
  });
});
