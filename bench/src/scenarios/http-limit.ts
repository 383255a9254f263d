import { join } from "node:path";
import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";
import { startBenchService } from "../services.ts";

/**
 * Limit: a do-nothing Node HTTP server (http-ceiling.ts) under scenario 1's autocannon load. It runs with scenario 1
 * too, whose maximum is compared with it (issue 13: >= 0.4).
 */
export const httpLimit: Scenario = {
  name: "limit: raw HTTP",
  selectedBy: [1, 6],
  async run(bench) {
    say("limits: raw HTTP ceiling (a do-nothing Node server, the same autocannon load as scenario 1)");
    const port = bench.cfg.apiPort + 19;
    const server = await startBenchService({
      name: "http-ceiling",
      entry: "bench/src/http-ceiling.ts",
      args: [String(port)],
      env: {},
      healthUrl: `http://127.0.0.1:${port}/`,
      logFile: join(bench.logDir, `bench-${bench.runId}-http.log`),
    });
    const http = await bench.phases.run("6 http", [server], () =>
      bench.load.maxLoad("track", bench.tenants.main.key, `http://127.0.0.1:${port}`),
    );
    say(`  ${fmt(http.requestsPerSec)} requests/s`);
    bench.limits.http = http;
  },
};
