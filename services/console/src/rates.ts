import type { Kafka } from "@crm/kafka";

/** Events per second at each stage, at one moment (null: that stage could not be read then). */
export interface RatePoint {
  at: number;
  accepted: number | null;
  applied: number | null;
  published: number | null;
}

export const STAGES = ["accepted", "applied", "published"] as const;
export type Stage = (typeof STAGES)[number];

/** Sum of a Prometheus counter's samples whose labels pass `keep` (text exposition format). */
export function counterSum(
  text: string,
  name: string,
  keep: (labels: string) => boolean = () => true,
): number | undefined {
  let sum: number | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name || !keep(match[3] ?? "")) continue;
    const value = Number(match[4]);
    if (Number.isFinite(value)) sum = (sum ?? 0) + value;
  }
  return sum;
}

async function metricsText(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2_000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

interface Totals {
  at: number;
  accepted: number | undefined;
  applied: number | undefined;
  published: number | undefined;
}

/**
 * Samples the three stage counters every `intervalMs` and keeps an hour of rates in memory: accepted (ingest-api's
 * ingest_events_total{outcome="accepted"}), applied (the worker's resolver_events_applied_total, duplicates left
 * out), published (messages written to contact.updated.v1: the sum of its partitions' end offsets). A counter that
 * went down (a restarted service) gives no rate for that step rather than a negative one.
 */
export class RateSampler {
  readonly points: RatePoint[] = [];
  private last: Totals | undefined;
  private timer: NodeJS.Timeout | undefined;
  private admin: ReturnType<Kafka["admin"]> | undefined;
  private adminReady: Promise<void> | undefined;

  constructor(
    private readonly options: {
      kafka: Kafka;
      ingestUrl: string;
      workerUrl: string;
      publishedTopic: string;
      intervalMs: number;
      /** points kept (default: one hour) */
      keep?: number;
    },
  ) {}

  start(): void {
    const tick = () => {
      void this.sample().finally(() => {
        this.timer = setTimeout(tick, this.options.intervalMs);
        this.timer.unref();
      });
    };
    tick();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.admin?.disconnect().catch(() => {});
  }

  private async publishedTotal(): Promise<number | undefined> {
    try {
      this.admin ??= this.options.kafka.admin();
      this.adminReady ??= this.admin.connect();
      await this.adminReady;
      const offsets = await this.admin.fetchTopicOffsets(this.options.publishedTopic);
      return offsets.reduce((sum, o) => sum + Number(o.high), 0);
    } catch {
      this.adminReady = undefined;
      return undefined;
    }
  }

  async sample(): Promise<void> {
    const [ingest, worker, published] = await Promise.all([
      metricsText(this.options.ingestUrl),
      metricsText(this.options.workerUrl),
      this.publishedTotal(),
    ]);
    const totals: Totals = {
      at: Date.now(),
      accepted: ingest
        ? counterSum(ingest, "ingest_events_total", (l) => l.includes('outcome="accepted"'))
        : undefined,
      applied: worker
        ? counterSum(worker, "resolver_events_applied_total", (l) => !l.includes('outcome="duplicate"'))
        : undefined,
      published,
    };
    // A service that answers but has counted nothing yet has no sample line: that is zero, not unknown.
    if (ingest && totals.accepted === undefined) totals.accepted = 0;
    if (worker && totals.applied === undefined) totals.applied = 0;
    const last = this.last;
    this.last = totals;
    if (!last) return;
    const seconds = (totals.at - last.at) / 1_000;
    const rate = (now: number | undefined, before: number | undefined) =>
      now === undefined || before === undefined || now < before || seconds <= 0
        ? null
        : (now - before) / seconds;
    this.points.push({
      at: totals.at,
      accepted: rate(totals.accepted, last.accepted),
      applied: rate(totals.applied, last.applied),
      published: rate(totals.published, last.published),
    });
    const keep = this.options.keep ?? Math.ceil(3_600_000 / this.options.intervalMs);
    if (this.points.length > keep) this.points.splice(0, this.points.length - keep);
  }
}
