import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { appendFileSync, closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { repoRoot, stackEnv } from "@crm/config";
import { NonRetriableError } from "@crm/errors";
import { poll } from "./poll.ts";

/** Where a service's stdout and stderr go: appended to a file, kept in memory for `output()`, or ours. */
export type ServiceOutput = { file: string } | "capture" | "inherit";

export interface ServiceProcessOptions {
  /** Names the process in errors and notes. */
  name: string;
  /** The script, relative to the repository root; run as `node [--cpu-prof] --import tsx <entry> ...args`. */
  entry: string;
  args?: string[];
  /** Over the stack environment (`.stack/env` under this process's environment). */
  env?: Record<string, string>;
  /** Answers 2xx once the service can do its job (its /healthz or /readyz). */
  healthUrl: string;
  output: ServiceOutput;
  /** Run under --cpu-prof, which writes a profile per thread into this folder when the process exits. */
  cpuProfileDir?: string;
  /** As a supervisor (systemd, Kubernetes) would: start it again a second after an exit nobody asked for. */
  restartOnCrash?: boolean;
}

/** Every ServiceProcess of this process whose child is running, for stopAllServices and the exit safety net. */
const live = new Set<ServiceProcess>();

/** Stops every service this process started and that still runs (Ctrl-C, a failed run). */
export async function stopAllServices(): Promise<void> {
  await Promise.all([...live].map((service) => service.stop()));
}

let safetyNetInstalled = false;
function killLiveOnExit(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  // Whatever ends this process (an uncaught error, process.exit), no service is left behind.
  process.once("exit", () => {
    for (const service of live) service.signal("SIGKILL");
  });
}

/**
 * One service run as a child process from its real entry point (`src/main.ts`), started and waited for until its
 * health URL answers. The one way tests, `npm start`, bench and faults start a service. A caller may signal it
 * (SIGKILL, SIGSTOP, SIGCONT) and start it again; an exit it did not ask for is recorded in `unexpectedExits`.
 */
export class ServiceProcess {
  readonly name: string;
  /** Exits nobody asked for (a crash, or the service giving up on a dependency), with when they happened. */
  readonly unexpectedExits: { at: number; code: number | null; signal: string | null }[] = [];
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private expectingExit = false;
  private captured = "";

  constructor(private readonly options: ServiceProcessOptions) {
    this.name = options.name;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Where the service answers: the origin of its health URL. */
  get url(): string {
    return new URL(this.options.healthUrl).origin;
  }

  get cpuProfileDir(): string | undefined {
    return this.options.cpuProfileDir;
  }

  /** What the process wrote so far, across restarts, with a `---` line at each start (output "capture" only). */
  output(): string {
    return this.captured;
  }

  /** Spawns the process and waits until its health URL answers; a process that does not get there is killed. */
  async start(timeoutMs = 60_000): Promise<void> {
    const { entry, args = [], output, cpuProfileDir } = this.options;
    this.expectingExit = false;
    this.note(`--- started ${new Date().toISOString()}`);
    const logFd = typeof output === "object" ? openSync(output.file, "a") : undefined;
    const stream = output === "inherit" ? "inherit" : "pipe";
    const stdio: StdioOptions = logFd === undefined ? ["ignore", stream, stream] : ["ignore", logFd, logFd];
    // One sample per 10 ms, not V8's default 1 ms: enough for the self-time summaries of a 20 s phase, and the
    // profiled services no longer pay for their own observation on a busy machine (bench 8: p95 1.3 s without
    // profiles, 4.3-5.0 s with 1 ms samples).
    const profile = cpuProfileDir
      ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfileDir}`, "--cpu-prof-interval=10000"]
      : [];
    const child = spawn(process.execPath, [...profile, "--import", "tsx", entry, ...args], {
      cwd: repoRoot(),
      env: { ...stackEnv(), ...this.options.env },
      stdio,
    });
    if (logFd !== undefined) closeSync(logFd);
    child.stdout?.on("data", (chunk) => (this.captured += chunk));
    child.stderr?.on("data", (chunk) => (this.captured += chunk));
    child.once("error", (error) => this.note(`--- ${error.message}`));
    this.child = child;
    live.add(this);
    killLiveOnExit();
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        live.delete(this);
        this.exitedOnItsOwn(code, signal);
        resolve(code);
      }),
    );
    try {
      await this.waitHealthy(timeoutMs);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /** Waits until the health URL answers 2xx; fails at once when the process exits meanwhile. */
  async waitHealthy(timeoutMs = 60_000): Promise<void> {
    const url = this.options.healthUrl;
    try {
      await poll(
        `${this.name} to answer ${url}`,
        async () => {
          const child = this.child;
          if (!child || !this.running) {
            throw new NonRetriableError(
              `${this.name} exited (code ${child?.exitCode}, signal ${child?.signalCode}) before it was healthy`,
            );
          }
          const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
          await res.body?.cancel();
          return res.ok;
        },
        { timeoutMs },
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}${this.whereToLook()}`, { cause: error });
    }
  }

  /** Sends a signal the caller means (SIGKILL, SIGSTOP, SIGCONT, SIGTERM); an exit it causes is not a crash. */
  signal(signal: NodeJS.Signals): void {
    if (!this.child || !this.running) return;
    if (signal === "SIGKILL" || signal === "SIGTERM" || signal === "SIGINT") this.expectingExit = true;
    this.child.kill(signal);
  }

  /** SIGKILL, and wait for the exit. */
  async kill(): Promise<void> {
    await this.stop("SIGKILL");
  }

  /**
   * Stops the process (SIGCONT first, so a stopped one acts on `signal`), SIGKILL after `graceMs`, and resolves with
   * its exit code once it has exited. Also cancels a pending supervisor restart.
   */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 20_000): Promise<number | null> {
    this.expectingExit = true;
    const child = this.child;
    if (child && this.running) {
      if (signal !== "SIGKILL") child.kill("SIGCONT");
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exited;
  }

  private exitedOnItsOwn(code: number | null, signal: string | null): void {
    if (this.expectingExit) return;
    this.unexpectedExits.push({ at: Date.now(), code, signal });
    this.note(`--- exited on its own (code ${code}, signal ${signal})`);
    if (!this.options.restartOnCrash) return;
    setTimeout(() => {
      if (this.running || this.expectingExit) return;
      this.start().catch((error) => this.note(`--- supervisor restart failed: ${(error as Error).message}`));
    }, 1_000);
  }

  /** A line of our own between the process's lines (start markers, exits), where its output goes. */
  private note(line: string): void {
    const { output } = this.options;
    if (typeof output === "object") {
      mkdirSync(dirname(output.file), { recursive: true });
      appendFileSync(output.file, `${line}\n`);
    } else if (output === "capture") {
      this.captured += `${line}\n`;
    }
  }

  private whereToLook(): string {
    const { output } = this.options;
    if (typeof output === "object") return `; see ${output.file}`;
    return output === "capture" ? `\n--- output ---\n${this.captured}` : "";
  }
}
