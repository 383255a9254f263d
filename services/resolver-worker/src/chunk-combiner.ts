/**
 * Merges the chunks that the worker's concurrent runners (every partition batch of a fetch, every key runner of a
 * batch) submit within `lingerMs` of each other into ONE transaction of at most `maxEvents`.
 *
 * Why: `app.resolve_contacts` pays a fixed cost per transaction and per business of the chunk (about 1.4 ms of
 * Postgres CPU measured with pgbench, against ~260 µs per event more). At a steady 1,000 events/s over 12
 * partitions a partition's fetch holds a handful of events of several businesses, so chunks of one partition are
 * 1-5 events of 1-5 businesses; merged across partitions, a business's events of the moment go in one group.
 *
 * Order and atomicity: a submission is a list of events of keys no other submission holds at the same time (a
 * key lives in one partition, and within a partition batch in one runner, which submits its next slice only
 * after this one settled), so concatenating submissions keeps every key's order. The merged transaction commits
 * or rolls back as a whole; then every submission is applied again alone, and only one that fails alone rejects
 * (its runner applies its events one by one, as when its own chunk fails).
 */
export class ChunkCombiner<Item, Result> {
  private pending: {
    items: Item[];
    resolve: (results: Result[]) => void;
    reject: (error: unknown) => void;
  }[] = [];
  private pendingItems = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly apply: (items: Item[]) => Promise<Result[]>,
    private readonly options: { maxItems: number; lingerMs: number },
  ) {}

  /** The results of `items`, in their order, once the transaction they went into committed. */
  submit(items: Item[]): Promise<Result[]> {
    if (items.length >= this.options.maxItems) return this.apply(items);
    if (this.pendingItems + items.length > this.options.maxItems) this.flush();
    const settled = new Promise<Result[]>((resolve, reject) => {
      this.pending.push({ items, resolve, reject });
    });
    this.pendingItems += items.length;
    if (this.pendingItems >= this.options.maxItems) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.options.lingerMs);
    return settled;
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const group = this.pending;
    this.pending = [];
    this.pendingItems = 0;
    if (group.length === 0) return;
    this.apply(group.flatMap((submission) => submission.items)).then(
      (results) => {
        let at = 0;
        for (const submission of group) {
          submission.resolve(results.slice(at, at + submission.items.length));
          at += submission.items.length;
        }
      },
      (error: unknown) => {
        if (group.length === 1) {
          group[0]!.reject(error);
          return;
        }
        // Nothing of the merged transaction is stored. Each submission goes again in a transaction of its own,
        // so only the one holding the failing event (a poison event, a suppressed identifier) falls back to one
        // by one: one tenant's bad event costs the others one extra attempt, not their chunks.
        for (const submission of group)
          this.apply(submission.items).then(submission.resolve, submission.reject);
      },
    );
  }
}
