import { readFileSync } from "node:fs";
import type pg from "pg";

/*
 * What the machine does during a scenario, sampled every second: resident memory (VmRSS) and CPU of each process
 * of interest, machine-wide CPU, load average, and Postgres wait events (pg_stat_activity, every 250 ms).
 */

export interface ProcessFigures {
  pid: number;
  maxRssMb: number;
  /** CPU of this process over the window, in cores (1.0 = one core busy all the time). */
  cpuCores: number;
}

export interface SampleReport {
  seconds: number;
  processes: Record<string, ProcessFigures>;
  /** Machine CPU busy over the window, in cores out of `cores`. */
  machineBusyCores: number;
  loadAverage1m: number[];
  /** Share of sampled active Postgres backends by application and wait event (CPU = no wait event). */
  pgWaits: Record<string, number>;
  pgActiveBackendsMean: number;
}

const TICKS = 100; // USER_HZ on Linux

/** VmRSS, or with `field` another line of /proc/<pid>/status (RssAnon: private memory, no shared buffers). */
export function readRssMb(pid: number, field = "VmRSS"): number {
  try {
    const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** utime + stime of a process and its waited-for children, in clock ticks. */
export function readCpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  const total = values.reduce((sum, value) => sum + value, 0);
  return { busy: total - idle, total };
}

/** Pids of the postgres server's backends (children of the postmaster), summed as one "postgres" figure. */
export function childPids(parent: number): number[] {
  try {
    return readFileSync(`/proc/${parent}/task/${parent}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

export class Sampler {
  private timer: NodeJS.Timeout | undefined;
  private pgTimer: NodeJS.Timeout | undefined;
  private readonly rss: Record<string, number> = {};
  private readonly ticksAtStart: Record<string, number> = {};
  /** Latest CPU reading per process: a process that exits before the end keeps its last figure. */
  private readonly ticksLast: Record<string, number> = {};
  private readonly groupTicks: Record<string, Map<number, { first: number; last: number }>> = {};
  private machineAtStart = { busy: 0, total: 0 };
  private startedAt = 0;
  private readonly loads: number[] = [];
  private readonly waits: Record<string, number> = {};
  private pgSamples = 0;
  private pgActive = 0;

  /**
   * `processes`: name -> pid; `groups`: name -> pid of a parent whose children are summed (postgres backends).
   */
  constructor(
    private readonly processes: Record<string, number>,
    private readonly groups: Record<string, number>,
    private readonly admin: pg.Pool,
  ) {}

  /** Samples one more process from now on (a load generator spawned during the phase). */
  add(name: string, pid: number): void {
    this.processes[name] = pid;
    this.ticksAtStart[name] = readCpuTicks(pid);
  }

  start(): void {
    this.startedAt = performance.now();
    this.machineAtStart = machineTicks();
    for (const [name, pid] of Object.entries(this.processes)) this.ticksAtStart[name] = readCpuTicks(pid);
    for (const name of Object.keys(this.groups)) this.groupTicks[name] = new Map();
    const sample = () => {
      for (const [name, pid] of Object.entries(this.processes)) {
        this.rss[name] = Math.max(this.rss[name] ?? 0, readRssMb(pid));
        this.ticksLast[name] = Math.max(this.ticksLast[name] ?? 0, readCpuTicks(pid));
      }
      for (const [name, parent] of Object.entries(this.groups)) {
        let rss = readRssMb(parent);
        const seen = this.groupTicks[name]!;
        for (const pid of [parent, ...childPids(parent)]) {
          // Backends share the buffer pool with the postmaster: count only their private memory.
          if (pid !== parent) rss += readRssMb(pid, "RssAnon");
          const ticks = readCpuTicks(pid);
          const entry = seen.get(pid);
          if (entry) entry.last = ticks;
          else seen.set(pid, { first: ticks, last: ticks });
        }
        this.rss[name] = Math.max(this.rss[name] ?? 0, rss);
      }
      this.loads.push(Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]));
    };
    sample();
    this.timer = setInterval(sample, 1_000);
    this.pgTimer = setInterval(() => void this.samplePg(), 250);
  }

  private async samplePg(): Promise<void> {
    try {
      const { rows } = await this.admin.query<{ app: string; wait: string; n: number }>(
        `SELECT COALESCE(NULLIF(application_name, ''), backend_type) AS app,
                COALESCE(wait_event_type || ':' || wait_event, 'CPU') AS wait, count(*)::int AS n
         FROM pg_stat_activity
         WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'
         GROUP BY 1, 2`,
      );
      this.pgSamples++;
      for (const row of rows) {
        const key = `${row.app} ${row.wait}`;
        this.waits[key] = (this.waits[key] ?? 0) + row.n;
        this.pgActive += row.n;
      }
    } catch {}
  }

  stop(): SampleReport {
    clearInterval(this.timer);
    clearInterval(this.pgTimer);
    const seconds = (performance.now() - this.startedAt) / 1_000;
    const machine = machineTicks();
    const processes: Record<string, ProcessFigures> = {};
    for (const [name, pid] of Object.entries(this.processes)) {
      processes[name] = {
        pid,
        maxRssMb: round(this.rss[name] ?? 0),
        cpuCores: round(
          (Math.max(readCpuTicks(pid), this.ticksLast[name] ?? 0) - (this.ticksAtStart[name] ?? 0)) /
            TICKS /
            seconds,
        ),
      };
    }
    for (const [name, parent] of Object.entries(this.groups)) {
      let ticks = 0;
      for (const [pid, entry] of this.groupTicks[name]!)
        ticks += Math.max(readCpuTicks(pid), entry.last) - entry.first;
      processes[name] = {
        pid: parent,
        maxRssMb: round(this.rss[name] ?? 0),
        cpuCores: round(ticks / TICKS / seconds),
      };
    }
    const pgWaits: Record<string, number> = {};
    const entries = Object.entries(this.waits).sort((a, b) => b[1] - a[1]);
    for (const [key, count] of entries.slice(0, 12)) pgWaits[key] = round(count / Math.max(1, this.pgActive));
    return {
      seconds: round(seconds),
      processes,
      machineBusyCores: round(
        ((machine.busy - this.machineAtStart.busy) / Math.max(1, machine.total - this.machineAtStart.total)) *
          cpuCount(),
      ),
      loadAverage1m: this.loads,
      pgWaits,
      pgActiveBackendsMean: round(this.pgActive / Math.max(1, this.pgSamples)),
    };
  }
}

function cpuCount(): number {
  return readFileSync("/proc/cpuinfo", "utf8")
    .split("\n")
    .filter((line) => line.startsWith("processor")).length;
}

export function round(value: number, digits = 2): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
