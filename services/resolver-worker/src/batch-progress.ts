/**
 * Which messages of one partition batch are done (applied or dead-lettered), in any order, and the last offset
 * of the contiguous done prefix: the only point up to which committing is safe.
 */
export class BatchProgress {
  private readonly done = new Set<string>();
  private next = 0;

  /** `offsets` in partition order, as the batch delivered them. */
  constructor(private readonly offsets: readonly string[]) {}

  markDone(offset: string): void {
    this.done.add(offset);
    while (this.next < this.offsets.length && this.done.has(this.offsets[this.next]!)) this.next++;
  }

  /** The last offset such that it and every earlier offset of the batch are done; undefined if none. */
  appliedThrough(): string | undefined {
    return this.next === 0 ? undefined : this.offsets[this.next - 1];
  }

  /** The offsets done past the contiguous prefix (a later key went on while an earlier event waits). */
  doneBeyondPrefix(): string[] {
    return this.offsets.slice(this.next).filter((offset) => this.done.has(offset));
  }
}
