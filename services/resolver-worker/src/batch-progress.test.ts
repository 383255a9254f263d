import { describe, expect, it } from "vitest";
import { BatchProgress } from "./batch-progress.ts";

describe("BatchProgress", () => {
  it("advances only over the contiguous done prefix, whatever order messages finish in", () => {
    const progress = new BatchProgress(["10", "11", "12", "14"]);
    expect(progress.appliedThrough()).toBeUndefined();
    progress.markDone("12");
    progress.markDone("14");
    expect(progress.appliedThrough()).toBeUndefined();
    progress.markDone("10");
    expect(progress.appliedThrough()).toBe("10");
    expect(progress.doneBeyondPrefix()).toEqual(["12", "14"]);
    progress.markDone("11");
    expect(progress.appliedThrough()).toBe("14");
    expect(progress.doneBeyondPrefix()).toEqual([]);
  });
});
