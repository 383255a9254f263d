import { preparePipeline } from "@crm/pipeline";
import { BenchRun } from "./bench-run.ts";
import { readBenchConfig, say } from "./config.ts";
import { summarizeProfileFile } from "./profile.ts";
import { writeResults } from "./results-file.ts";
import { SCENARIOS } from "./scenarios/index.ts";
import { stopAllServices } from "./services.ts";

/*
 * `npm run bench` (issue 6): each scenario after a warm-up, for a fixed time, against the shared stack, with its
 * own ingest-api and resolver-worker child processes on private ports (restarted per scenario, so each has its own
 * CPU profile and metrics), its own Kafka topics and consumer groups (removed at the end), load from separate
 * child processes, and the machine's limits (Kafka producer perf, pgbench of the resolve transaction) measured in
 * the same run. Markdown table to stdout, everything to bench/results/latest.json. One file per scenario in
 * scenarios/; settings in config.ts. `npm run bench -- profile <file.cpuprofile>` summarizes a profile.
 */

const runId = new Date().toISOString().replace(/[:.]/g, "-");
let bench: BenchRun | undefined;

async function main(): Promise<void> {
  if (process.argv[2] === "profile") {
    for (const file of process.argv.slice(3))
      console.log(JSON.stringify(summarizeProfileFile(file), null, 2));
    return;
  }
  const startedAt = Date.now();
  const cfg = readBenchConfig(process.env);
  say(
    `run ${runId}: warm-up ${cfg.warmupS} s, duration ${cfg.durationS} s, scenarios ${[...cfg.only].join(",")}`,
  );
  await preparePipeline({ log: say });
  bench = await BenchRun.open(cfg, runId);
  try {
    for (const scenario of SCENARIOS) {
      if (scenario.selectedBy.some((n) => cfg.only.has(n))) await bench.run(scenario);
    }
  } finally {
    await bench.close();
  }
  writeResults(bench, startedAt);
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    say(`${signal}: stopping the services the bench started and removing its topics`);
    void (bench ? bench.close() : stopAllServices()).finally(() => process.exit(130));
  });
}

main()
  .catch((error) => {
    say(`failed: ${(error as Error).stack ?? error}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await stopAllServices();
    process.exit();
  });
