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
    say("limits: pgbench of the resolve transaction (same identity mix, the worker's role)");
    const tenant = await createTenant(bench.admin, bench.runId, "pgbench");
    // As the worker runs: its pool size and events per transaction, from its own config schema.
    const worker = WorkerEnv.parse(stackEnv());
    const clients = worker.DATABASE_POOL_SIZE;
    const pgbench = await bench.phases.run("6 pgbench", [], () =>
      runPgbench({
        databaseUrl: bench.env.DATABASE_URL!,
        businessId: tenant.businessId,
        clients,
        // the applied scenario is a backlog (lag growing): the worker's chunks are the backlog's
        eventsPerTransaction: worker.WORKER_BACKLOG_EVENTS_PER_TRANSACTION,
        warmupS: bench.cfg.warmupS,
        durationS: bench.cfg.durationS,
        scriptDir: bench.logDir,
        onSpawn: bench.phases.onLoadSpawn,
      }),
    );
    say(
      `  ${fmt(pgbench.eventsPerSec)} events/s (${fmt(pgbench.tps)} transactions/s of ${pgbench.eventsPerTransaction} events, ${clients} clients)`,
    );
    bench.limits.pgbench = pgbench;

    say("limits: pgbench of the same rows written directly (the storage alone, no resolution logic)");
    const floorTenant = await createTenant(bench.admin, bench.runId, "pgbench-floor");
    const floor = await bench.phases.run("6 pgbench floor", [], () =>
      runPgbench({
        databaseUrl: bench.env.DATABASE_URL!,
        businessId: floorTenant.businessId,
        clients,
        eventsPerTransaction: worker.WORKER_BACKLOG_EVENTS_PER_TRANSACTION,
        warmupS: bench.cfg.warmupS,
        durationS: bench.cfg.durationS,
        scriptDir: bench.logDir,
        kind: "floor",
        onSpawn: bench.phases.onLoadSpawn,
      }),
    );
    say(`  ${fmt(floor.eventsPerSec)} events/s (${fmt(floor.tps)} transactions/s)`);
    bench.limits.pgbenchFloor = floor;
  },
};
