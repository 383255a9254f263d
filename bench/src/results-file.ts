import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import type { BenchRun } from "./bench-run.ts";
import { BENCH_PLAN, BENCH_PLAN_LIMIT, say } from "./config.ts";
import { buildReport, fmt } from "./report.ts";

/** Writes everything the run measured to bench/results/latest.json and prints the Markdown report to stdout. */
export function writeResults(bench: BenchRun, startedAt: number): void {
  const root = repoRoot();
  const { results, cfg } = bench;
  if (Object.keys(bench.limits).length) results.limits = bench.limits;
  if (Object.keys(bench.errors).length) results.errors = bench.errors;
  const commit = spawnSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" }).stdout.trim();
  const report = buildReport(results, bench.phases.phases, cpus().length);
  const args = process.argv.slice(2);
  const json = {
    date: new Date().toISOString(),
    command: `npm run bench${args.length ? ` -- ${args.join(" ")}` : ""}`,
    settings: { ...cfg, only: [...cfg.only] },
    gitCommit: commit,
    // The services run from the working tree: uncommitted changes there are part of what was measured.
    gitUncommitted: spawnSync(
      "git",
      ["status", "--porcelain", "--", "services", "packages", "infra", "schemas"],
      { cwd: root, encoding: "utf8" },
    )
      .stdout.split("\n")
      .filter(Boolean),
    machine: {
      cores: cpus().length,
      cpuModel: cpus()[0]?.model,
      memoryMb: Math.round(totalmem() / 1024 / 1024),
      loadAverage: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number),
    },
    runtimeS: Math.round((Date.now() - startedAt) / 1_000),
    benchPlan: { plan: BENCH_PLAN, eventsPerSecond: BENCH_PLAN_LIMIT },
    recordSize: bench.recordSize,
    results,
    phases: bench.phases.phases,
    table: report,
  };
  const outDir = join(root, "bench", "results");
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "latest.json"), `${JSON.stringify(json, null, 2)}\n`);
  console.log(
    `## Benchmarks ${json.date.slice(0, 16).replace("T", " ")} UTC, ${json.machine.cores} cores, ${fmt(json.machine.memoryMb / 1024)} GiB, load ${json.machine.loadAverage.join(" ")}, \`${json.command}\` at ${commit.slice(0, 8)}\n`,
  );
  console.log(report);
  say(`done in ${json.runtimeS} s; bench/results/latest.json written`);
}
