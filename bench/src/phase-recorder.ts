import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { stackDir } from "@crm/config";
import type pg from "pg";
import { summarizeProfileFile } from "./profile.ts";
import type { Phase } from "./report.ts";
import { round, Sampler } from "./sampler.ts";
import { type BenchService, mainThreadProfile } from "./services.ts";
import { histogramQuantile, parseCounterTotal, parseGauge, parseHistogram } from "./stats.ts";

/**
 * Measures phases: samples the machine while a phase's body runs, then stops the phase's services and keeps what
 * they and the sampler saw (report.ts `Phase`), by phase name.
 */
export class PhaseRecorder {
  readonly phases: Record<string, Phase> = {};
  private readonly stack = stackPids();
  private current: Sampler | undefined;

  constructor(
    private readonly admin: pg.Pool,
    /** Messages on the raw topic the bench's services use, so far. */
    private readonly rawTopicEnd: () => Promise<number>,
  ) {}

  /** Load generators join the sampled processes of the phase they run in. */
  readonly onLoadSpawn = (pid: number) => this.current?.add("load", pid);

  /**
   * Samples the machine while `body` runs; stops the services afterwards and summarizes their profiles. `watched`
   * services are sampled too but left running (a phase whose measurement goes on after its load).
   */
  async run<T>(
    name: string,
    services: BenchService[],
    body: () => Promise<T>,
    watched: BenchService[] = [],
  ): Promise<T> {
    const processes: Record<string, number> = {};
    for (const service of [...services, ...watched]) processes[service.name] = service.pid;
    for (const [part, pid] of Object.entries(this.stack)) if (part !== "postgres") processes[part] = pid;
    const sampler = new Sampler(
      processes,
      this.stack.postgres ? { postgres: this.stack.postgres } : {},
      this.admin,
    );
    const rawAtStart = await this.rawTopicEnd();
    sampler.start();
    this.current = sampler;
    try {
      return await body();
    } finally {
      this.current = undefined;
      await this.finish(name, services, sampler, rawAtStart);
    }
  }

  private async finish(
    name: string,
    services: BenchService[],
    sampler: Sampler,
    rawAtStart: number,
  ): Promise<void> {
    const sample = sampler.stop();
    const rawTopicInPerSec = round(((await this.rawTopicEnd()) - rawAtStart) / sample.seconds, 0);
    const worker = services.find((service) => service.name.startsWith("worker"));
    const workerMetrics = worker ? workerFigures(await metricsText(worker)) : undefined;
    const api = services.find((service) => service.name.startsWith("api"));
    const apiMetrics = api ? apiFigures(await metricsText(api)) : undefined;
    const profiles: Phase["profiles"] = {};
    await Promise.all(services.map((service) => service.stop()));
    for (const service of services) {
      if (!service.profileDir) continue;
      const file = mainThreadProfile(service.profileDir);
      profiles[service.name] = file ? { ...summarizeProfileFile(file, 8), file } : "no profile written";
    }
    this.phases[name] = {
      sample,
      rawTopicInPerSec,
      profiles,
      ...(workerMetrics ? { workerMetrics } : {}),
      ...(apiMetrics ? { apiMetrics } : {}),
    };
  }
}

/** A service's Prometheus text, or "" when it does not answer. */
export function metricsText(service: BenchService): Promise<string> {
  return fetch(`${service.url}/metrics`).then(
    (res) => res.text(),
    () => "",
  );
}

function workerFigures(text: string): NonNullable<Phase["workerMetrics"]> {
  const p95 = (metric: string) => round(histogramQuantile(parseHistogram(text, metric), 0.95) * 1_000, 3);
  return {
    lockHoldP95Ms: p95("resolver_lock_hold_seconds"),
    lockWaitP95Ms: p95("resolver_lock_wait_seconds"),
    transactionP95Ms: p95("resolver_transaction_seconds"),
    applied: parseCounterTotal(text, "resolver_events_applied_total"),
  };
}

function apiFigures(text: string): NonNullable<Phase["apiMetrics"]> {
  return {
    produceP95Ms: round(
      histogramQuantile(
        parseHistogram(text, "ingest_kafka_produce_duration_seconds", { outcome: "ok" }),
        0.95,
      ) * 1_000,
      2,
    ),
    eventLoopLagP99Ms: round(parseGauge(text, "nodejs_eventloop_lag_p99_seconds") * 1_000, 2),
  };
}

/** Pids of the shared stack's processes, from the launcher's pid files. */
function stackPids(): Record<string, number> {
  const pids: Record<string, number> = {};
  for (const name of ["postgres", "kafka", "connect", "registry"]) {
    const file = join(stackDir(), "pids", `${name}.pid`);
    if (!existsSync(file)) continue;
    try {
      const text = readFileSync(file, "utf8").trim();
      pids[name] = text.startsWith("{") ? (JSON.parse(text) as { pid: number }).pid : Number(text);
    } catch {}
  }
  return pids;
}
