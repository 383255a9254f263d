import { stackEnv } from "@crm/config";
// The worker's own config schema: pgbench mirrors its pool size and events per transaction (a read of defaults;
// the bench never runs worker code in-process).
import { WorkerEnv } from "../../../services/resolver-worker/src/env.ts";
import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { runPgbench } from "../limits.ts";
import { fmt } from "../report.ts";
import { createTenant } from "../tenants.ts";

/** Limit: pgbench of the worker's resolve transaction, with the same identity mix, as the services' role. */
export const pgbenchLimit: Scenario = {
  name: "limit: pgbench",
  selectedBy: [6],
  async run(bench) {
    // As the worker runs: its pool size and events per transaction, from its own config schema.
    const worker = WorkerEnv.parse(stackEnv());
    const clients = worker.DATABASE_POOL_SIZE;
    // Each script on a business of its own, in its own phase (its CPU per process is the limit's evidence).
    const measure = async (kind: "resolve" | "floor", phase: string) => {
      const tenant = await createTenant(bench.admin, bench.runId, `pgbench-${kind}`);
      const result = await bench.phases.run(phase, [], () =>
        runPgbench({
          databaseUrl: bench.env.DATABASE_URL!,
          businessId: tenant.businessId,
          clients,
          // the applied scenario is a backlog (lag growing): the worker's chunks are the backlog's
          eventsPerTransaction: worker.WORKER_BACKLOG_EVENTS_PER_TRANSACTION,
          warmupS: bench.cfg.warmupS,
          durationS: bench.cfg.durationS,
          scriptDir: bench.logDir,
          kind,
          onSpawn: bench.phases.onLoadSpawn,
        }),
      );
      say(
        `  ${fmt(result.eventsPerSec)} events/s (${fmt(result.tps)} transactions/s of ${result.eventsPerTransaction} events, ${clients} clients)`,
      );
      return result;
    };
    say("limits: pgbench of the resolve transaction (same identity mix, the worker's role)");
    bench.limits.pgbench = await measure("resolve", "6 pgbench");
    say("limits: pgbench of the same rows written directly (the storage alone, no resolution logic)");
    bench.limits.pgbenchFloor = await measure("floor", "6 pgbench floor");
  },
};
