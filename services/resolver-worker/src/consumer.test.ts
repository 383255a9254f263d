import { DependencyUnavailableError, NonRetriableError } from "@crm/errors";
import type { KafkaMessage } from "@crm/kafka";
import { describe, expect, it } from "vitest";
import { classifyFailure, eventsPerTransaction, queuesForChunks, takeChunk } from "./consumer.ts";

const pgError = (code: string) => Object.assign(new Error(`pg ${code}`), { code });

describe("classifyFailure", () => {
  it("calls the database unavailable only when it gave no answer: waited out, not counted", () => {
    expect(classifyFailure(new DependencyUnavailableError("postgres", "down"))).toBe("unavailable");
    for (const code of ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P02", "57P03"])
      expect(classifyFailure(pgError(code)), code).toBe("unavailable");
    expect(classifyFailure(new Error("Connection terminated unexpectedly"))).toBe("unavailable");
    expect(classifyFailure(new Error("timeout exceeded when trying to connect"))).toBe("unavailable");
  });
  it("treats any other SQLSTATE as an answer about the statement: 08P01 (a NUL byte) is retried, then DLQ", () => {
    for (const code of ["08P01", "08006", "08003", "08000"])
      expect(classifyFailure(pgError(code)), code).toBe("transient");
  });
  it("retries races and timeouts", () => {
    for (const code of ["40001", "40P01", "23505", "55P03", "53300"])
      expect(classifyFailure(pgError(code)), code).toBe("transient");
    expect(classifyFailure(new Error("something odd"))).toBe("transient");
  });
  it("dead-letters what can never succeed", () => {
    expect(classifyFailure(new NonRetriableError("bad"))).toBe("permanent");
    for (const code of ["22P02", "22021", "22P05", "22008", "23503", "23514", "42501"])
      expect(classifyFailure(pgError(code)), code).toBe("permanent");
  });
});

describe("takeChunk", () => {
  const queue = (key: string, n: number) =>
    Array.from({ length: n }, (_, i) => ({ key: Buffer.from(key), offset: `${key}${i}` }) as KafkaMessage);

  it("takes whole key queues, in order, up to the limit", () => {
    const queues = [queue("a", 2), queue("b", 3), queue("c", 4)];
    expect(takeChunk(queues, 5).map((m) => m.offset)).toEqual(["a0", "a1", "b0", "b1", "b2"]);
    expect(queues.map((q) => q[0]!.offset)).toEqual(["c0"]);
  });

  it("never splits a key between chunks: a long queue goes whole, alone", () => {
    const queues = [queue("a", 7), queue("b", 1)];
    expect(takeChunk(queues, 5).map((m) => m.offset)).toEqual(["a0", "a1", "a2", "a3", "a4", "a5", "a6"]);
    expect(takeChunk(queues, 5).map((m) => m.offset)).toEqual(["b0"]);
    expect(takeChunk(queues, 5)).toEqual([]);
  });
});

describe("queuesForChunks", () => {
  it("orders key queues by key, so a chunk gathers one business's keys; each queue stays whole and in order", () => {
    const message = (key: string, offset: string) => ({ key: Buffer.from(key), offset }) as KafkaMessage;
    const queues = [
      [message("b2:email:x", "0"), message("b2:email:x", "3")],
      [message("b1:ext:y", "1")],
      [message("b2:anon:z", "2")],
    ];
    expect(queuesForChunks(queues).map((q) => q.map((m) => m.offset))).toEqual([["1"], ["2"], ["0", "3"]]);
  });
});

describe("eventsPerTransaction", () => {
  it("chunks only while the partition lags by chunkMinLag or more", () => {
    const options = { eventsPerTransaction: 5, chunkMinLag: 200 };
    expect(eventsPerTransaction(options, 0n)).toBe(1);
    expect(eventsPerTransaction(options, 199n)).toBe(1);
    expect(eventsPerTransaction(options, 200n)).toBe(5);
    expect(eventsPerTransaction({ eventsPerTransaction: 5, chunkMinLag: 0 }, 0n)).toBe(5);
    expect(eventsPerTransaction({ eventsPerTransaction: 0 }, 1_000n)).toBe(1);
  });
  it("takes the backlog's larger chunks only from backlogMinLag on", () => {
    const options = {
      eventsPerTransaction: 5,
      chunkMinLag: 16,
      backlogEventsPerTransaction: 50,
      backlogMinLag: 1_000,
    };
    expect(eventsPerTransaction(options, 15n)).toBe(1);
    expect(eventsPerTransaction(options, 999n)).toBe(5);
    expect(eventsPerTransaction(options, 1_000n)).toBe(50);
  });
});
