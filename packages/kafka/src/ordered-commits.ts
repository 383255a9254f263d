export interface PartitionOffset {
  topic: string;
  partition: number;
  offset: string;
}

export interface OrderedCommitsOptions {
  /** Commits `offset` (the next one to read) of a partition for the group. */
  commit: (next: PartitionOffset) => Promise<void>;
  /** Moves the consumer's fetch position of a partition back to `offset` (kafkajs `consumer.seek`). */
  seek: (first: PartitionOffset) => void;
  /** A batch's work failed: its partition is read again from its first uncommitted offset. */
  onFailure?: (error: unknown, from: PartitionOffset) => void;
  /** A commit failed (a rebalance took the partition, the broker went away): the next owner reads it again. */
  onCommitError?: (error: unknown, next: PartitionOffset) => void;
}

interface Tracked {
  first: string;
  next: string;
  done: boolean;
}

interface PartitionState {
  /** Bumped when the partition is read again or the group changes: settlements of older batches are ignored. */
  epoch: number;
  batches: Tracked[];
  /** The partition's commits, one after another. */
  commits: Promise<void>;
}

/**
 * Commits each partition's offsets in order while the work of its batches settles in any order, so that a consumer
 * can hand a batch over and fetch the next one at once instead of waiting for the work (kafkajs fetches again only
 * when every batch of the previous fetch returned). An offset is committed only once the work of every batch up to
 * it succeeded; a failure seeks the partition back to its first uncommitted offset, so what failed (and what came
 * after it) is delivered again. At-least-once, like committing after the work, for work that is idempotent.
 */
export class OrderedCommits {
  private readonly partitions = new Map<string, PartitionState>();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: OrderedCommitsOptions) {}

  /** Tracks the batch `first..last` of a partition, whose work is `work`. */
  track(topic: string, partition: number, first: string, last: string, work: Promise<unknown>): void {
    const key = `${topic}\u0000${partition}`;
    let state = this.partitions.get(key);
    if (!state) {
      state = { epoch: 0, batches: [], commits: Promise.resolve() };
      this.partitions.set(key, state);
    }
    const tracked: Tracked = { first, next: (BigInt(last) + 1n).toString(), done: false };
    state.batches.push(tracked);
    const epoch = state.epoch;
    const settled = work.then(
      () => {
        if (state.epoch !== epoch) return;
        tracked.done = true;
        this.advance(state, topic, partition);
      },
      (error: unknown) => {
        if (state.epoch !== epoch) return;
        const from = { topic, partition, offset: state.batches[0]?.first ?? first };
        state.epoch++;
        state.batches = [];
        this.options.onFailure?.(error, from);
        this.options.seek(from);
      },
    );
    this.inFlight.add(settled);
    void settled.finally(() => this.inFlight.delete(settled));
  }

  /** Forgets every partition's uncommitted batches (a new group generation: the partitions' owners read them). */
  reset(): void {
    for (const state of this.partitions.values()) {
      state.epoch++;
      state.batches = [];
    }
  }

  /** Resolves once the work tracked so far settled and its commits were sent. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    await Promise.allSettled([...this.partitions.values()].map((s) => s.commits));
  }

  private advance(state: PartitionState, topic: string, partition: number): void {
    let next: string | undefined;
    while (state.batches[0]?.done) {
      next = state.batches.shift()!.next;
    }
    if (next === undefined) return;
    const offset = { topic, partition, offset: next };
    state.commits = state.commits
      .then(() => this.options.commit(offset))
      .catch((error: unknown) => this.options.onCommitError?.(error, offset));
  }
}
