import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import { CONFIG, startedAt } from "../config.ts";
import type { Harness } from "../harness.ts";
import { markdownTable } from "../report.ts";
import type { LedgerCheck } from "./check-ledger.ts";
import type { Drained } from "./drain.ts";

/** The per-fault table and findings to stdout, everything to faults/results/latest.json; the exit code. */
export function writeReport(harness: Harness, drained: Drained, check: LedgerCheck): number {
  const { load, probe, services, failures, runId } = harness;
  const { acked, live, committedLag, slotLag } = drained;
  const { phases, total, invariants } = check;
  const elapsedMs = Date.now() - startedAt;
  const stats = load.stats();
  const keyedGaveUp = load.ledger.filter((e) => e.key && e.outcome === "failed").length;
  const baseline = phases.find((p) => p.phase === "baseline");
  console.log(`\n## Fault injection report (run ${runId})\n`);
  console.log(markdownTable([...phases, total]));
  console.log("");
  for (const p of phases) for (const line of p.notes) console.log(`- ${p.phase}: ${line}`);
  for (const [name, ok, detail] of invariants) console.log(`- [${ok ? "x" : " "}] ${name}: ${detail}`);
  console.log(
    `- load: ${CONFIG.rate} req/s offered (${stats.skipped} not started: client in-flight cap), 50% keyed; ` +
      `${acked.length} acknowledged, ${live.applied.length} events applied, ${live.outbox.length} outbox rows, ` +
      `${probe.deliveries.length} deliveries (${total.duplicateMessages} duplicates); keyed requests that gave up: ${keyedGaveUp}`,
  );
  console.log(
    `- raw limit, same run: serial replay of resolve_contact ${check.replayEventsPerSec.toFixed(0)} events/s; ` +
      `offered load = ${((CONFIG.rate / check.replayEventsPerSec) * 100).toFixed(0)}% of it` +
      (baseline
        ? `; baseline acknowledged ${((baseline.acked / CONFIG.baselineMs) * 1000).toFixed(0)} req/s`
        : ""),
  );
  for (const service of services) {
    for (const exit of service.unexpectedExits) {
      console.log(
        `- ${service.name} exited unexpectedly at +${((exit.at - startedAt) / 1000).toFixed(0)} s (code ${exit.code}, signal ${exit.signal})`,
      );
    }
  }
  console.log(
    `- after the drain: worker group committed lag ${committedLag ?? "unreadable"} messages; Debezium slot lag ${slotLag ?? "?"} bytes`,
  );
  console.log(`- elapsed: ${(elapsedMs / 1000).toFixed(0)} s`);
  mkdirSync(join(repoRoot(), "faults", "results"), { recursive: true });
  writeFileSync(
    join(repoRoot(), "faults", "results", "latest.json"),
    `${JSON.stringify(
      {
        run: runId,
        finishedAt: new Date().toISOString(),
        elapsedMs,
        config: CONFIG,
        phases,
        total,
        invariants: invariants.map(([name, ok, detail]) => ({ name, ok, detail })),
        failures,
        committedLag,
        slotLagBytes: slotLag,
        replayEventsPerSec: check.replayEventsPerSec,
        unexpectedExits: services.map((svc) => ({ name: svc.name, exits: svc.unexpectedExits })),
      },
      null,
      2,
    )}\n`,
  );
  if (failures.length > 0) {
    console.log(`\nFAILED:\n${failures.map((f) => `  - ${f}`).join("\n")}`);
    return 1;
  }
  console.log("\nall invariants held");
  return 0;
}
