import { type SpawnOptions, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { NonRetriableError } from "@crm/errors";
import { poll } from "@crm/process";

/** A process the launcher started, identified by pid and kernel start time so a recycled pid is never killed. */
export interface PidRecord {
  pid: number;
  startTime: string;
}

/** The start time of a pid in clock ticks since boot (/proc/<pid>/stat field 22), or undefined when gone. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces; fields after the closing parenthesis are plain.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = rest[0];
    if (state === "Z" || state === "X") return undefined;
    return rest[19];
  } catch {
    return undefined;
  }
}

export function pidFile(pidsDir: string, name: string): string {
  return join(pidsDir, `${name}.pid`);
}

export function recordPid(pidsDir: string, name: string, pid: number): PidRecord {
  mkdirSync(pidsDir, { recursive: true });
  const startTime = processStartTime(pid);
  if (!startTime) throw new Error(`${name} (pid ${pid}) exited right after start`);
  const record = { pid, startTime };
  writeFileSync(pidFile(pidsDir, name), JSON.stringify(record));
  return record;
}

export function readPid(pidsDir: string, name: string): PidRecord | undefined {
  const file = pidFile(pidsDir, name);
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as PidRecord;
  } catch {
    return undefined;
  }
}

/** True when the recorded process is still the one we started. */
export function isAlive(record: PidRecord | undefined): record is PidRecord {
  return record !== undefined && processStartTime(record.pid) === record.startTime;
}

export function forgetPid(pidsDir: string, name: string): void {
  rmSync(pidFile(pidsDir, name), { force: true });
}

/** Starts a long-running process detached from this one, its output appended to `logFile`. */
export function spawnDaemon(
  command: string,
  args: string[],
  options: { logFile: string } & SpawnOptions,
): number {
  const out = openSync(options.logFile, "a");
  const child = spawn(command, args, { ...options, detached: true, stdio: ["ignore", out, out] });
  closeSync(out);
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  child.unref();
  return child.pid;
}

/**
 * Stops a recorded process: `signal` first, SIGKILL after `graceMs`. Returns once the process is gone.
 * Only the exact process recorded is signalled (pid + start time), never a pid that was reused.
 */
export async function stopProcess(record: PidRecord, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!isAlive(record)) return;
  process.kill(record.pid, signal);
  const gone = () => !isAlive(record);
  if (await poll(`pid ${record.pid} to exit`, gone, { timeoutMs: graceMs, throwOnTimeout: false })) return;
  process.kill(record.pid, "SIGKILL");
  await poll(`pid ${record.pid} to exit after SIGKILL`, gone, { timeoutMs: 30_000, intervalMs: 100 });
}

/** Polls `check` until it returns true or `timeoutMs` passes; the error names the part and where to look. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  options: { timeoutMs: number; logFile?: string; alive?: () => boolean },
): Promise<void> {
  const where = options.logFile ? `; see ${options.logFile}` : "";
  const ready = await poll(
    what,
    async () => {
      if (await check().catch(() => false)) return true;
      if (options.alive && !options.alive())
        throw new NonRetriableError(`${what} exited during start-up${where}`);
      return false;
    },
    { timeoutMs: options.timeoutMs, intervalMs: 500, throwOnTimeout: false },
  );
  if (!ready) throw new Error(`${what} not ready after ${Math.round(options.timeoutMs / 1000)} s${where}`);
}

/** True when something accepts TCP connections on host:port. */
export function portOpen(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** True when nothing holds host:port, so a server can bind it (an outgoing connection's local port counts too). */
export function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * Fails before a start when a port is taken, naming it. Ports in the kernel's ephemeral range are refused up front:
 * any outgoing connection may hold them, so a listener there fails at random.
 */
export async function assertPortsFree(what: string, host: string, ports: number[]): Promise<void> {
  const [low, high] = ephemeralRange();
  for (const port of ports) {
    if (port >= low && port <= high) {
      throw new Error(
        `${what}: port ${port} is in the ephemeral range ${low}-${high} (outgoing connections take those); choose a port below ${low}`,
      );
    }
    // A process killed a moment ago can still hold its listening socket while it exits: give it a few seconds.
    const free = await poll(`port ${port} to be free`, () => portFree(host, port), {
      timeoutMs: 10_000,
      intervalMs: 250,
      throwOnTimeout: false,
    });
    if (!free) throw new Error(`${what}: port ${host}:${port} is already in use`);
  }
}

function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    return [Number(low), Number(high)];
  } catch {
    return [32768, 60999];
  }
}

/** Runs a command to completion; throws with its output when it fails. */
export function run(
  command: string,
  args: string[],
  options: SpawnOptions & { quiet?: boolean } = {},
): string {
  const result = spawnSync(command, args, {
    encoding: "utf8",
    ...options,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(" ")} failed (${result.status}):\n${result.stdout}${result.stderr}`,
    );
  }
  return String(result.stdout ?? "");
}

/** True when `command` is on the PATH. */
export function hasCommand(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}
