import type { BenchResults, Phase } from "./report.ts";
import { fmt, ratio, verdict } from "./report.ts";

/** The load generators: clients of the pipeline, left out of its CPU (as in the CPU-per-event table). */
const isClient = (name: string) => /load|autocannon|paced|max-load/.test(name);

/** CPU cores of a phase's pipeline processes (every sampled process but the load generators). */
export function pipelineCores(phase: Phase | undefined): number | undefined {
  if (!phase) return undefined;
  return Object.entries(phase.sample.processes)
    .filter(([name]) => !isClient(name))
    .reduce((sum, [, figures]) => sum + figures.cpuCores, 0);
}

const perEventUs = (cores: number | undefined, eventsPerSec: number | undefined) =>
  cores === undefined || eventsPerSec === undefined || !(eventsPerSec > 0)
    ? undefined
    : (cores * 1e6) / eventsPerSec;

/**
 * Issue 13's rows for the applied side, each beside its same-run limit: applied events/s against pgbench of the
 * worker's transaction, Postgres CPU per applied event (scenario 4's saturated run), the whole pipeline's CPU per
 * event and the worker's lock hold where it keeps up (1,000 events/s), and API 202 -> contact.updated.v1 at
 * 1,000 and 2,500 events/s.
 */
export function workerRows(results: BenchResults, phases: Record<string, Phase>): string[][] {
  const rows: string[][] = [];
  const pgLimit = results.limits?.pgbench?.eventsPerSec;
  const s4t = results.scenario4Throughput;
  const applied = phases["4 applied"];
  if (s4t) {
    rows.push([
      "4 end to end",
      `applied events/s (offered ${fmt(s4t.offeredAcceptedPerSec)}, lag ${s4t.saturated ? "growing" : "flat"})`,
      fmt(s4t.appliedPerSec),
      `pgbench ${fmt(pgLimit)} events/s`,
      ratio(s4t.appliedPerSec, pgLimit),
      `>= 3,500: ${verdict(s4t.appliedPerSec, 3_500, "higher")}; >= 0.8: ${pgLimit ? verdict(s4t.appliedPerSec / pgLimit, 0.8, "higher") : "n/a"}`,
    ]);
    const postgres = applied?.sample.processes.postgres?.cpuCores;
    const pgbenchPhase = phases["6 pgbench"]?.sample.processes.postgres?.cpuCores;
    const pgbenchPerEvent = perEventUs(pgbenchPhase, pgLimit);
    // the storage alone: what the same rows cost Postgres without the logic that decides them
    const floorPerEvent = perEventUs(
      phases["6 pgbench floor"]?.sample.processes.postgres?.cpuCores,
      results.limits?.pgbenchFloor?.eventsPerSec,
    );
    rows.push([
      "4 end to end",
      "Postgres CPU µs per applied event (saturated run)",
      fmt(perEventUs(postgres, s4t.appliedPerSec), 0),
      `pgbench ${fmt(pgbenchPerEvent, 0)} µs/event${floorPerEvent === undefined ? "" : `; its rows alone ${fmt(floorPerEvent, 0)}`}`,
      ratio(perEventUs(postgres, s4t.appliedPerSec), pgbenchPerEvent),
      `<= 150: ${verdict(perEventUs(postgres, s4t.appliedPerSec), 150, "lower")}`,
    ]);
    rows.push([
      "4 end to end",
      "whole pipeline CPU µs per applied event (saturated run, every process but the load)",
      fmt(perEventUs(pipelineCores(applied), s4t.appliedPerSec), 0),
      "",
      "",
      `<= 500: ${verdict(perEventUs(pipelineCores(applied), s4t.appliedPerSec), 500, "lower")}`,
    ]);
  }
  const steady = [
    { name: "4 latency", result: results.scenario4Latency },
    { name: "4 latency high", result: results.scenario4LatencyHigh },
  ];
  for (const { name, result } of steady) {
    if (!result) continue;
    const phase = phases[name];
    // What reached the raw topic: above the machine's capacity the API accepts less than the paced load offers
    // (its 64 connections wait on slower answers), and the row must say at which rate it was measured.
    const at = `${fmt(result.rate)} events/s offered (${fmt(phase?.rawTopicInPerSec)}/s accepted)`;
    rows.push([
      "4 end to end",
      `whole pipeline CPU µs per event at ${at} (every process but the load)`,
      fmt(perEventUs(pipelineCores(phase), phase?.rawTopicInPerSec), 0),
      "",
      "",
      `<= 500: ${verdict(perEventUs(pipelineCores(phase), phase?.rawTopicInPerSec), 500, "lower")}`,
    ]);
    rows.push([
      "4 end to end",
      `worker lock hold p95 ms at ${at}`,
      fmt(phase?.workerMetrics?.lockHoldP95Ms, 2),
      "",
      "",
      result.rate <= 1_000 ? `<= 5 ms: ${verdict(phase?.workerMetrics?.lockHoldP95Ms, 5, "lower")}` : "",
    ]);
    rows.push([
      "4 end to end",
      `202 -> contact.updated.v1 p50/p95/p99 ms at ${at} (${result.e2e.all.latencyMs.count} of ${result.e2e.all.expected} matched)`,
      `${fmt(result.e2e.all.latencyMs.p50, 2)} / ${fmt(result.e2e.all.latencyMs.p95, 2)} / ${fmt(result.e2e.all.latencyMs.p99, 2)}`,
      "",
      "",
      `p95 < 500 ms: ${verdict(result.e2e.all.latencyMs.p95, 500, "lower")}`,
    ]);
  }
  return rows;
}
