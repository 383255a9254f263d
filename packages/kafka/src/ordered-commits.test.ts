import { describe, expect, it } from "vitest";
import { OrderedCommits, type PartitionOffset } from "./ordered-commits.ts";

function deferred() {
  let resolve: () => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets the settled work's handlers and the commits they chain run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

function recorder() {
  const commits: PartitionOffset[] = [];
  const seeks: PartitionOffset[] = [];
  const failures: PartitionOffset[] = [];
  const commitErrors: PartitionOffset[] = [];
  let failCommits = false;
  const tracker = new OrderedCommits({
    commit: async (next) => {
      if (failCommits) throw new Error("rebalance in progress");
      commits.push(next);
    },
    seek: (from) => seeks.push(from),
    onFailure: (_error, from) => failures.push(from),
    onCommitError: (_error, next) => commitErrors.push(next),
  });
  return {
    tracker,
    commits,
    seeks,
    failures,
    commitErrors,
    failNextCommits: () => {
      failCommits = true;
    },
  };
}

describe("OrderedCommits", () => {
  it("commits a partition's offset only when every batch before it is done, whatever order they finish in", async () => {
    const { tracker, commits } = recorder();
    const [a, b, c] = [deferred(), deferred(), deferred()];
    tracker.track("t", 0, "0", "9", a.promise);
    tracker.track("t", 0, "10", "19", b.promise);
    tracker.track("t", 0, "20", "24", c.promise);
    c.resolve();
    b.resolve();
    await settle();
    expect(commits).toEqual([]);
    a.resolve();
    await tracker.drain();
    // one commit covering all three, the offset after the last message
    expect(commits).toEqual([{ topic: "t", partition: 0, offset: "25" }]);
  });

  it("keeps partitions apart", async () => {
    const { tracker, commits } = recorder();
    const [a, b] = [deferred(), deferred()];
    tracker.track("t", 0, "5", "5", a.promise);
    tracker.track("t", 1, "7", "8", b.promise);
    b.resolve();
    await settle();
    expect(commits).toEqual([{ topic: "t", partition: 1, offset: "9" }]);
    a.resolve();
    await tracker.drain();
    expect(commits).toContainEqual({ topic: "t", partition: 0, offset: "6" });
  });

  it("a failure seeks back to the first uncommitted offset and ignores the batches after it", async () => {
    const { tracker, commits, seeks, failures } = recorder();
    const [a, b, c] = [deferred(), deferred(), deferred()];
    tracker.track("t", 3, "0", "9", a.promise);
    tracker.track("t", 3, "10", "19", b.promise);
    tracker.track("t", 3, "20", "29", c.promise);
    a.resolve();
    await settle();
    expect(commits).toEqual([{ topic: "t", partition: 3, offset: "10" }]);
    c.resolve();
    b.reject(new Error("postgres went away"));
    await tracker.drain();
    expect(seeks).toEqual([{ topic: "t", partition: 3, offset: "10" }]);
    expect(failures).toEqual(seeks);
    // c finished, but after a failed b: nothing beyond 10 is committed, the seek reads b and c again
    expect(commits).toEqual([{ topic: "t", partition: 3, offset: "10" }]);
    // the batches read again are tracked afresh
    tracker.track("t", 3, "10", "29", Promise.resolve());
    await tracker.drain();
    expect(commits.at(-1)).toEqual({ topic: "t", partition: 3, offset: "30" });
  });

  it("a failure after a batch still in flight seeks back to that batch, not to the failed one", async () => {
    const { tracker, seeks, commits } = recorder();
    const [a, b] = [deferred(), deferred()];
    tracker.track("t", 0, "100", "109", a.promise);
    tracker.track("t", 0, "110", "119", b.promise);
    b.reject(new Error("boom"));
    await settle();
    expect(seeks).toEqual([{ topic: "t", partition: 0, offset: "100" }]);
    a.resolve();
    await tracker.drain();
    expect(commits).toEqual([]);
  });

  it("after reset (a new group generation) batches of the old one commit nothing", async () => {
    const { tracker, commits, seeks } = recorder();
    const a = deferred();
    tracker.track("t", 0, "0", "0", a.promise);
    tracker.reset();
    a.reject(new Error("late"));
    await tracker.drain();
    expect(commits).toEqual([]);
    expect(seeks).toEqual([]);
  });

  it("reports a failed commit and goes on committing later offsets", async () => {
    const { tracker, commits, commitErrors, failNextCommits } = recorder();
    failNextCommits();
    tracker.track("t", 0, "0", "0", Promise.resolve());
    await tracker.drain();
    expect(commitErrors).toEqual([{ topic: "t", partition: 0, offset: "1" }]);
    expect(commits).toEqual([]);
  });
});
