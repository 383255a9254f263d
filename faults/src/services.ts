import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { join } from "node:path";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One service of the pipeline run as a child process (its real `src/main.ts`), which the harness may SIGKILL,
 * SIGSTOP and restart. Output goes to `<logs>/<name>.log`; an exit the harness did not cause is recorded.
 */
export class ServiceProcess {
  private child: ChildProcess | undefined;
  private log: WriteStream | undefined;
  private expectingExit = false;
  /** Exits nobody asked for (a crash, or the service giving up on a dependency), with when they happened. */
  readonly unexpectedExits: { at: number; code: number | null; signal: string | null }[] = [];

  constructor(
    readonly name: string,
    private readonly options: {
      root: string;
      entry: string;
      env: Record<string, string>;
      healthUrl: string;
      logsDir: string;
    },
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(timeoutMs = 60_000): Promise<void> {
    this.log ??= createWriteStream(join(this.options.logsDir, `${this.name}.log`), { flags: "a" });
    this.log.write(`--- started ${new Date().toISOString()}\n`);
    this.expectingExit = false;
    const child = spawn(process.execPath, ["--import", "tsx", this.options.entry], {
      cwd: this.options.root,
      env: { ...process.env, ...this.options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    child.stdout?.pipe(this.log, { end: false });
    child.stderr?.pipe(this.log, { end: false });
    child.once("exit", (code, signal) => {
      if (this.expectingExit) return;
      this.unexpectedExits.push({ at: Date.now(), code, signal });
      // As a supervisor (systemd, Kubernetes) would: restart a service that died on its own, after a second.
      setTimeout(() => {
        if (!this.running && !this.expectingExit) {
          this.start().catch((error) => this.log?.write(`--- supervisor restart failed: ${error}\n`));
        }
      }, 1_000);
    });
    await this.waitHealthy(timeoutMs);
  }

  async waitHealthy(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${this.name} exited before it was healthy (see its log)`);
      const ok = await fetch(this.options.healthUrl, { signal: AbortSignal.timeout(1_000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return;
      await sleep(200);
    }
    throw new Error(`${this.name} not healthy after ${timeoutMs} ms`);
  }

  /** Sends a signal the harness means (SIGKILL, SIGSTOP, SIGCONT, SIGTERM); a resulting exit is not a crash. */
  signal(signal: NodeJS.Signals): void {
    if (!this.child || !this.running) return;
    if (signal === "SIGKILL" || signal === "SIGTERM") this.expectingExit = true;
    this.child.kill(signal);
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    this.signal("SIGKILL");
    await exited;
  }

  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  close(): void {
    this.log?.end();
  }
}
