import type { Pool } from "@crm/db";
import { errorMessage } from "@crm/errors";
import type { Logger } from "@crm/logger";
import type { SegmentsMetrics } from "./metrics.ts";
import { type ContactTrigger, chunks, mergeTriggers } from "./reevaluate.ts";

export interface SweepDeps {
  pool: Pool;
  logger: Logger;
  metrics: SegmentsMetrics;
  intervalMs: number;
  chunk: number;
  /** Due rows read per query, and at most this many per business (so one business cannot fill a sweep). */
  limit?: number;
  perBusiness?: number;
  reevaluate: (businessId: string, triggers: ContactTrigger[]) => Promise<unknown>;
}

/**
 * Every `intervalMs`, re-evaluates the memberships whose next_check_at has passed: an event left a window, a date
 * crossed its N days, a "no event in N days" came true. Due rows are read across businesses by
 * app.segments_due (ids only), then each business's contacts are re-evaluated in its own transactions, round robin.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly deps: SweepDeps) {}

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      const started = performance.now();
      this.running = this.sweep().then(
        () => {},
        (error) => this.deps.logger.warn({ err: errorMessage(error) }, "sweep failed"),
      );
      await this.running;
      this.deps.metrics.sweepSeconds.observe((performance.now() - started) / 1_000);
      if (!this.stopped) this.timer = setTimeout(tick, this.deps.intervalMs);
    };
    this.timer = setTimeout(tick, this.deps.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One sweep: until no row is due (each pass moves every due row's next_check_at or removes it). */
  async sweep(): Promise<number> {
    const limit = this.deps.limit ?? 2_000;
    let total = 0;
    for (let pass = 0; pass < 50 && !this.stopped; pass++) {
      const { rows } = await this.deps.pool.query<{
        business_id: string;
        segment_id: string;
        contact_id: string;
      }>(`SELECT business_id::text, segment_id::text, contact_id::text FROM app.segments_due($1, $2)`, [
        limit,
        this.deps.perBusiness ?? 500,
      ]);
      if (rows.length === 0) break;
      total += rows.length;
      const byBusiness = new Map<string, ContactTrigger[]>();
      for (const row of rows) {
        const list = byBusiness.get(row.business_id) ?? [];
        list.push({
          contactId: row.contact_id,
          cause: { cause: "time" },
          segments: new Set([row.segment_id]),
        });
        byBusiness.set(row.business_id, list);
      }
      const queues = [...byBusiness].map(([businessId, triggers]) => ({
        businessId,
        pending: chunks(mergeTriggers(triggers), this.deps.chunk),
      }));
      while (queues.some((q) => q.pending.length > 0) && !this.stopped) {
        for (const queue of queues) {
          const next = queue.pending.shift();
          if (next) await this.deps.reevaluate(queue.businessId, next);
        }
      }
      if (rows.length < limit) break;
    }
    return total;
  }
}
