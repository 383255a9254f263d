import type pg from "pg";

export interface PruneOptions {
  /** Slots that must all have confirmed a row before it goes; a slot that does not exist blocks all pruning. */
  slots: string[];
  /** Streamed rows younger than this stay (for replay and debugging). */
  retentionMs: number;
  /** Rows per DELETE, so a large backlog never holds locks for long. */
  batchSize?: number;
  /** Only this business's rows (tests share one database with other tests). */
  businessId?: string;
  /** The outbox tables pruned (default both): contact changes, and segment membership changes (issue 16). */
  tables?: OutboxTable[];
}

/** Tables streamed by the connector's Event Routers whose rows carry `txid` and may go once streamed. */
export const OUTBOX_TABLES = ["outbox", "segment_outbox"] as const;
export type OutboxTable = (typeof OUTBOX_TABLES)[number];

export interface PruneResult {
  deleted: number;
  /** The slowest slot's confirmed_flush_lsn, or null when a slot is missing. */
  confirmedLsn: string | null;
  /** The mark whose transactions were pruned, or null when no mark is confirmed yet. */
  markLsn: string | null;
  /** The mark this run recorded, for a later run. */
  takenMarkLsn: string;
}

/**
 * Deletes outbox rows (both outbox tables) that every slot in `options.slots` has confirmed and that are older than the retention.
 * See infra/migrations/020_outbox_pruning.sql for why marks prove that a row was streamed: each run records a
 * new mark (oldest running transaction, then the WAL position) and prunes with the newest mark the slots have
 * confirmed, which is always one from an earlier run. Safe to run concurrently and at any time.
 */
export async function pruneOutbox(pool: pg.Pool, options: PruneOptions): Promise<PruneResult> {
  // Two statements on purpose: the LSN must be read after the snapshot, so every transaction that had ended by
  // then has its commit record before the LSN.
  let takenMarkLsn: string;
  const client = await pool.connect();
  try {
    const { rows } = await client.query<{ oldest: string }>(
      "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS oldest",
    );
    const taken = await client.query<{ lsn: string }>(
      `INSERT INTO app.outbox_prune_marks (oldest_running, lsn) VALUES ($1::xid8, pg_current_wal_lsn())
       RETURNING lsn::text`,
      [rows[0]!.oldest],
    );
    takenMarkLsn = taken.rows[0]!.lsn;
  } finally {
    client.release();
  }

  const confirmed = await pool.query<{ lsn: string | null; found: number }>(
    `SELECT min(confirmed_flush_lsn)::text AS lsn, count(*)::int AS found
     FROM pg_replication_slots WHERE slot_name = ANY($1)`,
    [options.slots],
  );
  const slots = confirmed.rows[0]!;
  if (options.slots.length === 0 || slots.found < options.slots.length || slots.lsn === null) {
    return { deleted: 0, confirmedLsn: null, markLsn: null, takenMarkLsn };
  }
  // Ordered by the pg_lsn column, not its text ("0/45499E0" > "0/1308F770" as text).
  const marks = await pool.query<{ id: string; oldest_running: string; mark_lsn: string }>(
    `SELECT id, oldest_running::text, lsn::text AS mark_lsn FROM app.outbox_prune_marks
     WHERE lsn <= $1::pg_lsn ORDER BY app.outbox_prune_marks.lsn DESC LIMIT 1`,
    [slots.lsn],
  );
  const mark = marks.rows[0];
  if (!mark) return { deleted: 0, confirmedLsn: slots.lsn, markLsn: null, takenMarkLsn };

  const batchSize = options.batchSize ?? 5_000;
  let deleted = 0;
  for (const table of options.tables ?? OUTBOX_TABLES) {
    if (!OUTBOX_TABLES.includes(table)) throw new Error(`not an outbox table: ${table}`);
    for (;;) {
      const result = await pool.query(
        `DELETE FROM ${table} WHERE id IN (
           SELECT id FROM ${table}
           WHERE txid < $1::xid8 AND created_at < now() - make_interval(secs => $2)
             AND ($3::uuid IS NULL OR business_id = $3::uuid)
           LIMIT $4)`,
        [mark.oldest_running, options.retentionMs / 1000, options.businessId ?? null, batchSize],
      );
      deleted += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < batchSize) break;
    }
  }
  // Old marks are kept a day: another slot set (a second connector) may still need one of them.
  await pool.query(
    "DELETE FROM app.outbox_prune_marks WHERE taken_at < now() - interval '1 day' AND id <> $1",
    [mark.id],
  );
  return { deleted, confirmedLsn: slots.lsn, markLsn: mark.mark_lsn, takenMarkLsn };
}
