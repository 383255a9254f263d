import pg from "pg";
import { say, startedAt } from "./config.ts";
import { FAULTS } from "./faults.ts";
import { Harness } from "./harness.ts";
import { checkLedger } from "./phases/check-ledger.ts";
import { drain } from "./phases/drain.ts";
import { injectFault } from "./phases/inject-fault.ts";
import { bringUpPrivateStack, leavePrivateStack, preparePrivateStack } from "./phases/private-stack.ts";
import { seedBusinesses } from "./phases/seed-businesses.ts";
import { startServicesAndLoad } from "./phases/start-services.ts";
import { writeReport } from "./phases/write-report.ts";

/*
 * `npm run test:faults`: a private three-broker stack in .stack-faults, the real services as child processes
 * (one ingest-api, two resolver-workers in one group), a steady keyed + unkeyed load across several businesses,
 * one fault at a time with recovery, then a ledger check and a per-fault report. Exit 1 if an invariant fails.
 * Each phase is a file in phases/; the faults themselves are in faults.ts.
 */

async function main(): Promise<number> {
  const stack = await preparePrivateStack();
  try {
    const env = await bringUpPrivateStack(stack);
    const admin = new pg.Pool({ connectionString: env.DATABASE_ADMIN_URL, max: 4 });
    // Postgres is crashed on purpose: idle clients then emit errors, which must not end the harness.
    admin.on("error", () => {});
    const runId = Date.now().toString(36);
    const businesses = await seedBusinesses(admin, env, runId).catch(async (error) => {
      await admin.end().catch(() => {});
      throw error;
    });
    const harness = new Harness(stack.s, stack.tools, env, admin, runId, businesses);
    try {
      await startServicesAndLoad(harness);
      // FAULTS_ONLY=kafka,postgres: only the faults whose names contain one of these.
      const only = process.env.FAULTS_ONLY?.split(",");
      for (const fault of FAULTS.filter((f) => !only || only.some((o) => f.name.includes(o)))) {
        await injectFault(harness, fault);
      }
      const drained = await drain(harness);
      return writeReport(harness, drained, await checkLedger(harness, drained));
    } finally {
      await harness.close();
    }
  } finally {
    await leavePrivateStack(stack);
  }
}

main().then(
  (code) => {
    say(`done in ${((Date.now() - startedAt) / 1000).toFixed(0)} s`);
    process.exit(code);
  },
  (error) => {
    console.error(`[faults] ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
