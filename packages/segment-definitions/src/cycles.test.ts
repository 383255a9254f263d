import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { findCycle } from "./cycles.ts";

const graph = (edges: Record<string, string[]>) => (id: string) => edges[id] ?? [];

describe("findCycle", () => {
  it("finds a chain back to the start, and none where there is none", () => {
    expect(findCycle("a", graph({ a: ["b"], b: ["c"], c: ["a"] }))).toEqual(["a", "b", "c", "a"]);
    expect(findCycle("a", graph({ a: ["a"] }))).toEqual(["a", "a"]);
    expect(findCycle("a", graph({ a: ["b", "c"], b: ["c"], c: [] }))).toBeUndefined();
  });

  it("walks a chain of 100,000 segments without overflowing the stack", () => {
    const next = (id: string) => (Number(id) < 100_000 ? [String(Number(id) + 1)] : ["0"]);
    expect(findCycle("0", next)?.length).toBe(100_002);
  });

  // Any cycle reachable from start is a reason to refuse (stored definitions never hold one, as each was checked).
  it("on random graphs: finds a cycle whenever start reaches itself, and only real cycles", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(7), fc.nat(7)), { maxLength: 20 }), (pairs) => {
        const edges: Record<string, string[]> = {};
        for (const [from, to] of pairs) edges[from] = [...(edges[from] ?? []), String(to)];
        const reachable = new Set<string>();
        const todo = [...(edges["0"] ?? [])];
        while (todo.length > 0) {
          const id = todo.pop()!;
          if (reachable.has(id)) continue;
          reachable.add(id);
          todo.push(...(edges[id] ?? []));
        }
        const cycle = findCycle("0", graph(edges));
        if (reachable.has("0")) expect(cycle).toBeDefined();
        if (cycle) expect(cycle[0]).toBe(cycle.at(-1));
        for (let i = 0; cycle && i + 1 < cycle.length; i++) expect(edges[cycle[i]!]).toContain(cycle[i + 1]);
      }),
    );
  });
});
