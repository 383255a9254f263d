import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import type { BenchConfig } from "./config.ts";
import type { MaxLoadConfig } from "./max-load.ts";
import type { PacedLoadConfig, PacedRecord } from "./paced-load.ts";
import type { MaxLoadResult } from "./report.ts";
import { runNodeChild } from "./services.ts";
import { type Summary, summarize } from "./stats.ts";

/** What one paced run sent and how it was answered, measured part only where it says so. */
export interface PacedLoadResult {
  /** Every request, warm-up included (end-to-end matching needs the ids). */
  records: PacedRecord[];
  /** Measured requests answered 202. */
  accepted: PacedRecord[];
  statuses: Record<string, number>;
  dropped: number;
  maxInFlight: number;
  /** Open loop: latency from the time each request was due (not when it was sent). */
  latencyMs: Summary;
}

/** Runs the load generators (max-load.ts, paced-load.ts) as child processes against the bench's ingest-api. */
export class LoadGenerators {
  // Each paced run numbers its streams after the previous runs', so its identities are new to every business.
  private nextStreamBase = 0;

  constructor(
    private readonly options: {
      cfg: BenchConfig;
      apiUrl: string;
      /** Where paced runs leave their records for the parent to read. */
      workDir: string;
      runId: string;
      onSpawn: (pid: number) => void;
    },
  ) {}

  /** Closed loop, flat out, with autocannon: `url` is the bench's ingest-api unless given. */
  async maxLoad(mode: MaxLoadConfig["mode"], key: string, url = this.options.apiUrl): Promise<MaxLoadResult> {
    const { cfg } = this.options;
    const config: MaxLoadConfig = {
      url,
      key,
      mode,
      batchSize: 100,
      connections:
        mode === "batch" || mode === "batch-keyed"
          ? Math.max(8, Math.floor(cfg.connections / 4))
          : cfg.connections,
      warmupS: cfg.warmupS,
      durationS: cfg.durationS,
    };
    const out = await runNodeChild(
      join(repoRoot(), "bench/src/max-load.ts"),
      JSON.stringify(config),
      this.options.onSpawn,
    );
    return JSON.parse(out.trim().split("\n").at(-1)!) as MaxLoadResult;
  }

  /** Open loop at a fixed rate over weighted streams (one per ingest key). */
  async pacedLoad(
    options: Partial<PacedLoadConfig> & Pick<PacedLoadConfig, "keys" | "weights" | "rate">,
  ): Promise<PacedLoadResult> {
    const { cfg, workDir, runId, apiUrl, onSpawn } = this.options;
    const streamBase = this.nextStreamBase;
    this.nextStreamBase += options.keys.length;
    const outFile = join(workDir, `bench-${runId}-paced-${Date.now()}.json`);
    const config: PacedLoadConfig = {
      url: apiUrl,
      warmupS: cfg.warmupS,
      durationS: cfg.durationS,
      mode: "track",
      batchSize: 100,
      maxInFlight: 5_000,
      outFile,
      streamBase,
      ...options,
    };
    await runNodeChild(join(repoRoot(), "bench/src/paced-load.ts"), JSON.stringify(config), onSpawn);
    const text = readFileSync(outFile, "utf8");
    rmSync(outFile, { force: true });
    const parsed = JSON.parse(text) as {
      records: PacedRecord[];
      dropped: number;
      maxInFlight: number;
      unanswered: number;
    };
    const measured = parsed.records.filter((record) => !record.warmup);
    const accepted = measured.filter((record) => record.status === 202);
    const statuses: Record<string, number> = {};
    for (const record of measured) statuses[record.status] = (statuses[record.status] ?? 0) + 1;
    return {
      records: parsed.records,
      accepted,
      statuses,
      dropped: parsed.dropped,
      maxInFlight: parsed.maxInFlight,
      latencyMs: summarize(accepted.map((record) => record.doneAt - record.dueAt)),
    };
  }
}
