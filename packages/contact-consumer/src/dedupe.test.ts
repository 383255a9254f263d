import { describe, expect, it } from "vitest";
import { MemoryDedupeStore } from "./dedupe.ts";

describe("MemoryDedupeStore", () => {
  it("remembers ids and forgets the oldest beyond its capacity", () => {
    const store = new MemoryDedupeStore(2);
    store.add("a");
    store.add("b");
    expect(store.has("a")).toBe(true);
    store.add("c");
    expect(store.has("a")).toBe(false);
    expect(store.has("b")).toBe(true);
    expect(store.has("c")).toBe(true);
  });
});
