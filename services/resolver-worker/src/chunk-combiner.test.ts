import { describe, expect, it } from "vitest";
import { ChunkCombiner } from "./chunk-combiner.ts";

/** A combiner over strings whose "transaction" records what it got and answers each item upper-cased. */
function recording(options: { maxItems: number; lingerMs: number }, fail?: (items: string[]) => boolean) {
  const transactions: string[][] = [];
  const combiner = new ChunkCombiner<string, string>(async (items) => {
    transactions.push(items);
    await new Promise((resolve) => setTimeout(resolve, 1));
    if (fail?.(items)) throw new Error(`refused ${items.join(",")}`);
    return items.map((item) => item.toUpperCase());
  }, options);
  return { combiner, transactions };
}

describe("ChunkCombiner", () => {
  it("puts what is submitted within the linger in one transaction, in submission order, and splits the results", async () => {
    const { combiner, transactions } = recording({ maxItems: 50, lingerMs: 5 });
    const results = await Promise.all([
      combiner.submit(["a1", "a2"]),
      combiner.submit(["b1"]),
      combiner.submit(["c1", "c2", "c3"]),
    ]);
    expect(transactions).toEqual([["a1", "a2", "b1", "c1", "c2", "c3"]]);
    expect(results).toEqual([["A1", "A2"], ["B1"], ["C1", "C2", "C3"]]);
  });

  it("never passes the maximum: a full group goes at once, a submission that would overflow starts the next", async () => {
    const { combiner, transactions } = recording({ maxItems: 4, lingerMs: 1_000 });
    const first = combiner.submit(["a1", "a2", "a3"]);
    const second = combiner.submit(["b1", "b2"]);
    const third = combiner.submit(["c1", "c2"]);
    expect(await Promise.all([first, second, third])).toEqual([
      ["A1", "A2", "A3"],
      ["B1", "B2"],
      ["C1", "C2"],
    ]);
    expect(transactions).toEqual([
      ["a1", "a2", "a3"],
      ["b1", "b2", "c1", "c2"],
    ]);
    // a submission as large as the maximum is its own transaction, without waiting
    expect(await combiner.submit(["d1", "d2", "d3", "d4"])).toEqual(["D1", "D2", "D3", "D4"]);
    expect(transactions.at(-1)).toEqual(["d1", "d2", "d3", "d4"]);
  });

  it("after a failed merged transaction, applies each submission alone: only the one that fails alone rejects", async () => {
    const { combiner, transactions } = recording({ maxItems: 50, lingerMs: 5 }, (items) =>
      items.includes("bad"),
    );
    const outcomes = await Promise.allSettled([
      combiner.submit(["a1"]),
      combiner.submit(["bad", "b2"]),
      combiner.submit(["c1", "c2"]),
    ]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(outcomes[0]).toEqual({ status: "fulfilled", value: ["A1"] });
    expect(outcomes[2]).toEqual({ status: "fulfilled", value: ["C1", "C2"] });
    expect(transactions).toEqual([["a1", "bad", "b2", "c1", "c2"], ["a1"], ["bad", "b2"], ["c1", "c2"]]);
    // a lone submission that fails is not tried twice
    await expect(combiner.submit(["bad"])).rejects.toThrow("refused bad");
    expect(transactions.at(-1)).toEqual(["bad"]);
    expect(transactions).toHaveLength(5);
  });

  it("groups apart what is submitted apart", async () => {
    const { combiner, transactions } = recording({ maxItems: 50, lingerMs: 2 });
    await combiner.submit(["a1"]);
    await combiner.submit(["b1"]);
    expect(transactions).toEqual([["a1"], ["b1"]]);
  });
});
