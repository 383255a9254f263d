import type { KeyObject } from "node:crypto";
import { openSecret, signingKey, signWebhook } from "@crm/automations";
import { isConnectionFailure, type Pool, transaction } from "@crm/db";
import { errorMessage } from "@crm/errors";
import type { Logger } from "@crm/logger";
import { poll, sleep } from "@crm/process";
import type { AutomationsMetrics } from "./metrics.ts";
import { nextDelayMs } from "./schedule.ts";
import { type AttemptResult, type SendOptions, sendWebhook } from "./send-webhook.ts";

export interface DeliveryLoopOptions {
  pool: Pool;
  logger: Logger;
  metrics: AutomationsMetrics;
  secretKey: Buffer;
  /** The delivery queue this instance serves: its consumer group (instances of one group share it). */
  queue: string;
  send: SendOptions;
  /** Delays after failed attempts (ms); its length is the number of retries. */
  schedule: readonly number[];
  jitter: number;
  /** An endpoint failing this long without a success is disabled. */
  disableAfterMs: number;
  perEndpoint: number;
  maxInFlight: number;
  pollMs: number;
}

interface Claimed {
  delivery_id: string;
  business_id: string;
  message_id: string;
  endpoint_id: string;
  attempt: number;
  step: number;
  url: string;
  secret_sealed: string;
  previous_sealed: string | null;
  previous_expires_at: Date | null;
  event_type: string;
  payload: unknown;
}

interface Finished {
  claimed: Claimed;
  startedAt: Date;
  result: AttemptResult;
  /** ms until the next attempt; undefined = no further attempt */
  retryInMs: number | undefined;
}

/**
 * Claims due deliveries from Postgres (app.automation_claim_due: SKIP LOCKED, leased) and attempts them, at most
 * `perEndpoint` at once per endpoint and `maxInFlight` in all: an endpoint that is slow or never answers holds its
 * own slots only, while the others' deliveries keep flowing. Outcomes are written back in batches (one transaction
 * per flush), each in its delivery's tenant. A crash between the attempt and its record leaves the delivery leased:
 * it is due again when the lease ends, with the same webhook-id (at least once).
 */
export class DeliveryLoop {
  private inFlight = 0;
  private readonly perEndpoint = new Map<string, number>();
  private readonly waiting = new Map<string, Claimed[]>();
  private finished: Finished[] = [];
  private flushing: Promise<void> | undefined;
  private running = false;
  private wakeUp: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private readonly leaseSeconds: number;
  healthy = true;

  constructor(private readonly options: DeliveryLoopOptions) {
    // An attempt may wait behind perEndpoint - 1 others of its endpoint, each bounded by the timeout.
    this.leaseSeconds = Math.ceil((2 * options.send.timeoutMs) / 1000) + 5;
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** Something became due now (a match committed): claim without waiting for the poll interval. */
  wake(): void {
    this.wakeUp?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake();
    await this.loop;
    // Attempts still in flight after a moment (a slow endpoint) are abandoned: their leases bring them back.
    await poll("attempts in flight to finish", async () => (this.inFlight === 0 ? true : undefined), {
      timeoutMs: Math.min(this.options.send.timeoutMs, 3_000),
    }).catch(() => {});
    await this.flush();
  }

  private async run(): Promise<void> {
    while (this.running) {
      const capacity = this.options.maxInFlight - this.inFlight;
      let claimed: Claimed[] = [];
      if (capacity > 0) {
        try {
          claimed = await this.claim(Math.min(capacity, 200));
          this.healthy = true;
        } catch (error) {
          this.healthy = false;
          this.options.logger.warn({ err: errorMessage(error) }, "claiming due deliveries failed; retrying");
          await sleep(1_000);
        }
      }
      for (const row of claimed) this.enqueue(row);
      if (claimed.length === 0 || capacity <= 0) await this.idle();
    }
  }

  private idle(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.options.pollMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = () => {
        this.wakeUp = undefined;
        done();
      };
    });
  }

  private async claim(limit: number): Promise<Claimed[]> {
    // An endpoint with a queue here is busy too: claiming more for it would only lengthen the queue (and cost a
    // claim per finished attempt); it is claimed for again once its queue is drained.
    const busy = [...this.perEndpoint]
      .filter(([id, n]) => n >= this.options.perEndpoint || (this.waiting.get(id)?.length ?? 0) > 0)
      .map(([id]) => id);
    const { rows } = await this.options.pool.query<Claimed>(
      "SELECT * FROM app.automation_claim_due($1, $2, $3, $4::uuid[], make_interval(secs => $5))",
      [this.options.queue, limit, this.options.perEndpoint, busy, this.leaseSeconds],
    );
    return rows;
  }

  private enqueue(row: Claimed): void {
    const active = this.perEndpoint.get(row.endpoint_id) ?? 0;
    if (active >= this.options.perEndpoint) {
      const queue = this.waiting.get(row.endpoint_id) ?? [];
      queue.push(row);
      this.waiting.set(row.endpoint_id, queue);
      return;
    }
    this.perEndpoint.set(row.endpoint_id, active + 1);
    this.inFlight++;
    void this.attempt(row).finally(() => {
      this.inFlight--;
      const left = (this.perEndpoint.get(row.endpoint_id) ?? 1) - 1;
      if (left === 0) this.perEndpoint.delete(row.endpoint_id);
      else this.perEndpoint.set(row.endpoint_id, left);
      const next = this.waiting.get(row.endpoint_id)?.shift();
      if (next) this.enqueue(next);
      else this.waiting.delete(row.endpoint_id);
      if (this.inFlight < this.options.maxInFlight) this.wake();
    });
  }

  /** Opened secrets by their sealed text (a rotation seals anew, so a stale entry is never used), bounded. */
  private readonly opened = new Map<string, KeyObject>();
  private open(sealed: string): KeyObject {
    let secret = this.opened.get(sealed);
    if (secret === undefined) {
      secret = signingKey(openSecret(sealed, this.options.secretKey));
      if (this.opened.size >= 10_000) this.opened.delete(this.opened.keys().next().value!);
      this.opened.set(sealed, secret);
    }
    return secret;
  }

  private async attempt(claimed: Claimed): Promise<void> {
    const startedAt = new Date();
    let result: AttemptResult;
    try {
      const body = JSON.stringify(claimed.payload);
      const timestamp = Math.floor(startedAt.getTime() / 1000);
      const secrets = [this.open(claimed.secret_sealed)];
      if (claimed.previous_sealed && claimed.previous_expires_at && claimed.previous_expires_at > startedAt) {
        secrets.push(this.open(claimed.previous_sealed));
      }
      const headers = {
        "webhook-id": claimed.message_id,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": secrets
          .map((s) => signWebhook(s, claimed.message_id, timestamp, body))
          .join(" "),
      };
      result = await sendWebhook(claimed.url, headers, body, this.options.send);
    } catch (error) {
      // a secret this deployment's key cannot open: a configuration error, retried like a failure
      result = { outcome: "failed", error: `cannot sign: ${errorMessage(error)}`, durationMs: 0 };
    }
    const { metrics } = this.options;
    metrics.attempts.inc({ outcome: result.outcome });
    metrics.attemptSeconds.observe(result.durationMs / 1000);
    const final = result.outcome === "succeeded" || result.outcome === "gone";
    const retryInMs = final
      ? undefined
      : nextDelayMs(this.options.schedule, claimed.step, this.options.jitter, result.retryAfterMs);
    this.finished.push({ claimed, startedAt, result, retryInMs });
    if (result.outcome !== "succeeded") {
      this.options.logger.info(
        {
          delivery: claimed.delivery_id,
          endpoint: claimed.endpoint_id,
          attempt: claimed.attempt,
          outcome: result.outcome,
          status: result.statusCode,
          retry_in_ms: retryInMs,
        },
        "webhook attempt failed",
      );
    }
    // The slot is released now; the outcome is written in the next flush. Until then the delivery stays leased
    // (its next_attempt_at is the lease's end), so nothing claims it again meanwhile.
    void this.flush();
  }

  /**
   * Writes every finished attempt not yet written: one flush at a time, each taking all that finished meanwhile (one
   * transaction per batch). Resolves when what was finished at the call is written (or failed to be).
   */
  private flush(): Promise<void> {
    this.flushing ??= (async () => {
      while (this.finished.length > 0) {
        const batch = this.finished;
        this.finished = [];
        await this.record(batch).catch((error) => {
          // Not written: the leases run out and these deliveries are attempted again (same webhook-id).
          this.healthy = !isConnectionFailure(error) && this.healthy;
          this.options.logger.error(
            { err: errorMessage(error), attempts: batch.length },
            "recording attempts failed",
          );
        });
      }
    })().finally(() => {
      this.flushing = undefined;
      if (this.finished.length > 0) void this.flush();
    });
    return this.flushing;
  }

  private async record(batch: Finished[]): Promise<void> {
    const byBusiness = new Map<string, Finished[]>();
    for (const f of batch) {
      const list = byBusiness.get(f.claimed.business_id) ?? [];
      list.push(f);
      byBusiness.set(f.claimed.business_id, list);
    }
    const disabled: { endpoint: string; reason: string }[] = [];
    const outcomes: string[] = [];
    await transaction(this.options.pool, "automations.record", async (client) => {
      for (const [businessId, list] of byBusiness) {
        await client.query("SELECT set_config('app.business_id', $1, true)", [businessId]);
        const rows = list.map((f) => {
          const status =
            f.result.outcome === "succeeded" ? "succeeded" : f.retryInMs === undefined ? "failed" : "pending";
          if (status !== "pending") outcomes.push(status);
          return {
            delivery: f.claimed.delivery_id,
            attempt: f.claimed.attempt,
            status,
            next_ms: f.retryInMs ?? null,
            code: f.result.statusCode ?? null,
            error: f.result.error ?? null,
            started: f.startedAt.toISOString(),
            duration: f.result.durationMs,
            outcome: f.result.outcome,
            excerpt: f.result.excerpt ?? null,
          };
        });
        // A delivery deleted meanwhile (its trigger or endpoint was deleted) has no log to write to; the others are
        // locked against such a delete until this transaction ends, so their attempts can reference them.
        const { rows: present } = await client.query<{ id: string }>(
          "SELECT id FROM automation_deliveries WHERE business_id = $1 AND id = ANY($2::uuid[]) FOR KEY SHARE",
          [businessId, rows.map((r) => r.delivery)],
        );
        const exists = new Set(present.map((r) => r.id));
        const json = JSON.stringify(rows.filter((r) => exists.has(r.delivery)));
        await client.query(
          `INSERT INTO automation_attempts
             (business_id, delivery_id, attempt, started_at, duration_ms, outcome, status_code, error,
              response_excerpt, next_attempt_at)
           SELECT $1, r.delivery, r.attempt, r.started, r.duration, r.outcome, r.code, r.error, r.excerpt,
                  CASE WHEN r.next_ms IS NULL THEN NULL ELSE now() + make_interval(secs => r.next_ms / 1000.0) END
           FROM jsonb_to_recordset($2::jsonb) AS r(delivery uuid, attempt int, started timestamptz, duration int,
                outcome text, code int, error text, excerpt text, next_ms bigint)`,
          [businessId, json],
        );
        // Only the holder of the claim writes the delivery: a late record after the lease ran out (another
        // instance attempted it again) finds attempts moved on and changes nothing.
        await client.query(
          `UPDATE automation_deliveries d SET
             status = r.status,
             attempts = r.attempt,
             step = CASE WHEN r.status = 'pending' THEN d.step + 1 ELSE d.step END,
             next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + make_interval(secs => r.next_ms / 1000.0) END,
             last_status_code = r.code,
             last_error = r.error,
             delivered_at = CASE WHEN r.status = 'succeeded' THEN now() ELSE d.delivered_at END,
             updated_at = now()
           FROM jsonb_to_recordset($2::jsonb) AS r(delivery uuid, attempt int, status text, next_ms bigint, code int,
                error text)
           WHERE d.id = r.delivery AND d.business_id = $1 AND d.status = 'pending' AND d.attempts = r.attempt - 1`,
          [businessId, json],
        );
        const succeeded = [
          ...new Set(list.filter((f) => f.result.outcome === "succeeded").map((f) => f.claimed.endpoint_id)),
        ];
        const failing = list.filter((f) => f.result.outcome !== "succeeded" && f.result.outcome !== "gone");
        const gone = [
          ...new Set(list.filter((f) => f.result.outcome === "gone").map((f) => f.claimed.endpoint_id)),
        ];
        if (succeeded.length > 0) {
          await client.query(
            `UPDATE automation_endpoints SET failing_since = NULL
             WHERE business_id = $1 AND id = ANY($2::uuid[]) AND failing_since IS NOT NULL`,
            [businessId, succeeded],
          );
        }
        if (failing.length > 0) {
          // One UPDATE per endpoint row (a second one in the same statement would be ignored): the failure clock
          // starts at the first failure since the last success; past the limit, the endpoint is disabled.
          const { rows: marked } = await client.query<{ id: string; disabled_now: boolean }>(
            `WITH failed AS (
               SELECT endpoint, min(started) AS since
               FROM jsonb_to_recordset($2::jsonb) AS f(endpoint uuid, started timestamptz) GROUP BY endpoint),
             cur AS (
               SELECT e.id, e.enabled, coalesce(e.failing_since, failed.since) AS since,
                      coalesce(e.failing_since, failed.since) <= now() - make_interval(secs => $3 / 1000.0) AS over
               FROM automation_endpoints e JOIN failed ON failed.endpoint = e.id WHERE e.business_id = $1)
             UPDATE automation_endpoints e SET
               failing_since = cur.since,
               enabled = e.enabled AND NOT cur.over,
               disabled_reason = CASE WHEN e.enabled AND cur.over THEN 'failing' ELSE e.disabled_reason END,
               disabled_at = CASE WHEN e.enabled AND cur.over THEN now() ELSE e.disabled_at END,
               updated_at = CASE WHEN e.enabled AND cur.over THEN now() ELSE e.updated_at END
             FROM cur WHERE e.id = cur.id
             RETURNING e.id, cur.enabled AND cur.over AS disabled_now`,
            [
              businessId,
              JSON.stringify(
                failing.map((f) => ({ endpoint: f.claimed.endpoint_id, started: f.startedAt.toISOString() })),
              ),
              this.options.disableAfterMs,
            ],
          );
          const off = marked.filter((row) => row.disabled_now);
          for (const { id } of off) disabled.push({ endpoint: id, reason: "failing" });
        }
        if (gone.length > 0) {
          const { rows: off } = await client.query<{ id: string }>(
            `UPDATE automation_endpoints SET enabled = false, disabled_reason = 'gone', disabled_at = now(),
               updated_at = now()
             WHERE business_id = $1 AND id = ANY($2::uuid[]) AND enabled RETURNING id`,
            [businessId, gone],
          );
          for (const { id } of off) disabled.push({ endpoint: id, reason: "gone" });
        }
      }
    });
    for (const outcome of outcomes) this.options.metrics.deliveries.inc({ outcome });
    for (const d of disabled) {
      this.options.metrics.endpointsDisabled.inc({ reason: d.reason });
      // The report an operator (and the business, through the API's disabled_reason) sees.
      this.options.logger.warn(
        { endpoint: d.endpoint, reason: d.reason },
        d.reason === "gone"
          ? "endpoint answered 410 Gone: disabled"
          : "endpoint failing for too long: disabled",
      );
    }
  }
}
