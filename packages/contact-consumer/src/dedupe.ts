/**
 * Remembers which outbox ids were already handed to the callback. Debezium delivers at least once: after a
 * Connect crash a change can arrive again, at a new offset, with the same `id` header.
 */
export interface DedupeStore {
  has(id: string): boolean | Promise<boolean>;
  /** Called after the callback succeeded for `id`. */
  add(id: string): void | Promise<void>;
}

/**
 * The last `capacity` ids in memory. Enough for replays after a Connect crash (they repeat the last seconds of
 * changes), not across a restart of the consumer: a consumer whose effects must be exactly-once across its own
 * restarts stores the ids with its effects, in the same transaction, and passes that store instead.
 */
export class MemoryDedupeStore implements DedupeStore {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity = 100_000) {}

  has(id: string): boolean {
    return this.ids.has(id);
  }

  add(id: string): void {
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      // A Set iterates in insertion order: the first one is the oldest.
      const oldest = this.ids.values().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
  }
}
