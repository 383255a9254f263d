import { type Pool, transaction } from "@crm/db";
import { errorMessage } from "@crm/errors";
import type { Logger } from "@crm/logger";
import { CompileError, evaluationOrder, evaluationQuery } from "@crm/segment-definitions";
import { applyResults, exitAll, lockContacts } from "./apply-results.ts";
import type { SegmentsMetrics } from "./metrics.ts";
import type { SegmentCache } from "./segment-cache.ts";

export type JobKind = "backfill" | "edit" | "archive";

interface JobRow {
  kind: JobKind;
  version: number;
  inputs: string;
  cursor: string | null;
  done_at: Date | null;
}

export interface JobDeps {
  pool: Pool;
  cache: SegmentCache;
  logger: Logger;
  metrics: SegmentsMetrics;
  /** Contacts per page (one transaction). */
  pageSize: number;
  onTiming?: (tag: string, ms: number) => void;
}

export type PageOutcome = { done: boolean; entered: number; exited: number };

/**
 * One page of the job that brings `segmentId`'s memberships to its current definition, in one transaction with
 * the business as tenant:
 *  - the job row is locked; a definition newer than the job's version (or segments it names at other versions)
 *    restarts it from the first contact, as kind `edit` (or `archive`; `backfill` for a segment's first job), and
 *    restarts the jobs of the active segments naming it (their results depend on it);
 *  - the next `pageSize` contacts after the cursor are locked (the contacts' lock of apply-results.ts), evaluated
 *    and written with their outbox rows; an archive exits every member instead;
 *  - the cursor moves to the page's last contact, or the job is done.
 * A crash loses at most the page in flight, which is done again from the same cursor; a page done again writes
 * nothing, since its results equal the stored state.
 */
export async function runJobPage(deps: JobDeps, businessId: string, segmentId: string): Promise<PageOutcome> {
  return transaction(
    deps.pool,
    "segments_job_page",
    async (client) => {
      const { rows: defs } = await client.query<{ version: number; status: string }>(
        "SELECT version, status FROM segment_definitions WHERE business_id = $1 AND id = $2",
        [businessId, segmentId],
      );
      const def = defs[0];
      if (!def) return { done: true, entered: 0, exited: 0 };
      const business = await deps.cache.get(client, businessId);
      const inputs = def.status === "active" ? inputsSignature(business.segments, segmentId) : "";
      await client.query(
        `INSERT INTO segment_jobs (segment_id, business_id, kind, version, inputs)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (segment_id) DO NOTHING`,
        [segmentId, businessId, def.status === "active" ? "backfill" : "archive", def.version, inputs],
      );
      const { rows: jobs } = await client.query<JobRow>(
        "SELECT kind, version, inputs, cursor::text, done_at FROM segment_jobs WHERE segment_id = $1 FOR UPDATE",
        [segmentId],
      );
      let job = jobs[0]!;
      if (job.version !== def.version || job.inputs !== inputs) {
        const kind: JobKind = def.status === "active" ? "edit" : "archive";
        await client.query(
          `UPDATE segment_jobs SET kind = $2, version = $3, inputs = $4, cursor = NULL, done_at = NULL,
             started_at = now(), updated_at = now() WHERE segment_id = $1`,
          [segmentId, kind, def.version, inputs],
        );
        job = { kind, version: def.version, inputs, cursor: null, done_at: null };
        if (def.status === "active") await restartDependents(client, business.segments, segmentId);
      }
      if (job.done_at) return { done: true, entered: 0, exited: 0 };

      const { rows: page } = await client.query<{ id: string }>(
        job.kind === "archive"
          ? `SELECT contact_id::text AS id FROM segment_memberships
             WHERE business_id = $1 AND segment_id = $4 AND ($2::uuid IS NULL OR contact_id > $2::uuid)
             ORDER BY contact_id LIMIT $3`
          : // ordered by the uuid column (the text alias would sort the text form), along (business_id, id)
            `SELECT c.id::text AS id FROM crm_contacts c
             WHERE c.business_id = $1 AND ($2::uuid IS NULL OR c.id > $2::uuid)
             ORDER BY c.business_id, c.id LIMIT $3`,
        job.kind === "archive"
          ? [businessId, job.cursor, deps.pageSize, segmentId]
          : [businessId, job.cursor, deps.pageSize],
      );
      const contactIds = page.map((row) => row.id);
      let outcome = { entered: 0, exited: 0 };
      if (contactIds.length > 0) {
        const { now } = (await lockContacts(client, contactIds, "SELECT clock_timestamp() AS now")) as {
          now: Date;
        };
        const results =
          job.kind === "archive"
            ? exitAll(contactIds, segmentId)
            : evaluationQuery({
                businessId,
                segments: business.segments,
                targets: [segmentId],
                scope: { kind: "contacts", contactIds },
                now,
              });
        const applied = await applyResults(client, {
          businessId,
          results,
          versions: new Map([[segmentId, def.version]]),
          now,
          causes: { fallback: { cause: job.kind } },
        });
        outcome = { entered: applied.entered, exited: applied.exited };
        deps.metrics.evaluations.inc({ cause: job.kind }, applied.evaluated);
      }
      const done = contactIds.length < deps.pageSize;
      await client.query(
        `UPDATE segment_jobs SET cursor = $2, done_at = CASE WHEN $3 THEN now() END, updated_at = now()
         WHERE segment_id = $1`,
        [segmentId, contactIds.at(-1) ?? job.cursor, done],
      );
      deps.metrics.jobPages.inc({ kind: job.kind });
      return { done, ...outcome };
    },
    { businessId, onTiming: deps.onTiming },
  );
}

/** "id:version,..." of the segments `segmentId` names, transitively: their edit changes its results too. */
function inputsSignature(segments: Parameters<typeof evaluationOrder>[0], segmentId: string): string {
  try {
    return evaluationOrder(segments, [segmentId])
      .filter((id) => id !== segmentId)
      .map((id) => `${id}:${segments.get(id)!.version}`)
      .sort()
      .join(",");
  } catch (error) {
    if (error instanceof CompileError) return `invalid:${error.message}`;
    throw error;
  }
}

/** Restarts the jobs of the active segments that name `segmentId`, directly or through others. */
async function restartDependents(
  client: Parameters<Parameters<typeof transaction>[2]>[0],
  segments: Parameters<typeof evaluationOrder>[0],
  segmentId: string,
): Promise<void> {
  const dependents = [...segments.values()]
    .filter((s) => s.id !== segmentId)
    .filter((s) => {
      try {
        return evaluationOrder(segments, [s.id]).includes(segmentId);
      } catch {
        return false;
      }
    })
    .map((s) => s.id);
  if (dependents.length === 0) return;
  await client.query(
    `UPDATE segment_jobs SET kind = 'edit', cursor = NULL, done_at = NULL, started_at = now(), updated_at = now()
     WHERE segment_id = ANY($1::uuid[])`,
    [dependents],
  );
}

/**
 * Polls for segments whose memberships are behind their definitions (app.segments_needing_jobs) and runs their
 * jobs one page at a time, round robin over the segments found, so a large business's backfill does not hold back
 * another business's new segment for more than a page.
 */
export class JobRunner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly deps: JobDeps & { pollMs: number }) {}

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      this.running = this.round().catch((error) =>
        this.deps.logger.warn({ err: errorMessage(error) }, "segment jobs round failed"),
      );
      await this.running;
      if (!this.stopped) this.timer = setTimeout(tick, this.deps.pollMs);
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Runs the pending jobs found now to their end (or stop), one page per segment per turn. */
  async round(): Promise<void> {
    const { rows } = await this.deps.pool.query<{ business_id: string; segment_id: string }>(
      "SELECT business_id::text, segment_id::text FROM app.segments_needing_jobs(100)",
    );
    this.deps.metrics.jobsRunning.set(rows.length);
    let pending = rows;
    while (pending.length > 0 && !this.stopped) {
      const next: typeof rows = [];
      for (const row of pending) {
        if (this.stopped) return;
        try {
          const page = await runJobPage(this.deps, row.business_id, row.segment_id);
          if (!page.done) next.push(row);
        } catch (error) {
          // Left for the next round (a failing page is retried every poll, and logged each time).
          this.deps.logger.error(
            { err: errorMessage(error), segment_id: row.segment_id },
            "segment job page failed",
          );
        }
      }
      pending = next;
    }
  }
}
