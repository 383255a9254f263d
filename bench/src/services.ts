import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { repoRoot, stackEnv } from "@crm/config";

/** A service child process the bench started (its own ports, the shared stack), logging to a file. */
export interface BenchService {
  name: string;
  pid: number;
  url: string;
  /** Where --cpu-prof writes when the process exits, if profiling (see mainThreadProfile). */
  profileDir: string | undefined;
  stop: () => Promise<void>;
}

const running = new Set<BenchService>();

/** Stops every service still running (a failed scenario, Ctrl-C). */
export async function stopAllServices(): Promise<void> {
  await Promise.all([...running].map((service) => service.stop()));
}

/**
 * Starts `entry` (a service's src/main.ts) as `node [--cpu-prof] --import tsx`, with `env` over the stack's
 * environment and LOG_LEVEL=warn, output appended to `logFile`, and waits until `healthUrl` answers.
 * The services exit through process.exit on SIGTERM, which is when --cpu-prof writes its profile.
 */
export async function startBenchService(options: {
  name: string;
  entry: string;
  args?: string[];
  env: Record<string, string>;
  healthUrl: string;
  logFile: string;
  profileDir?: string;
}): Promise<BenchService> {
  // One folder per service: --cpu-prof writes a profile per thread (tsx's loader runs in a worker thread).
  const profileDir = options.profileDir ? join(options.profileDir, options.name) : undefined;
  const profileArgs = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
  const log = openSync(options.logFile, "a");
  const child: ChildProcess = spawn(
    process.execPath,
    [...profileArgs, "--import", "tsx", options.entry, ...(options.args ?? [])],
    {
      cwd: repoRoot(),
      env: { ...process.env, ...stackEnv(), LOG_LEVEL: "warn", ...options.env },
      stdio: ["ignore", log, log],
    },
  );
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`${options.name} exited with ${child.exitCode}; see ${options.logFile}`);
    const ok = await fetch(options.healthUrl, { signal: AbortSignal.timeout(1_000) }).then(
      (res) => res.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${options.name} not healthy after 60 s; see ${options.logFile}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const service: BenchService = {
    name: options.name,
    pid: child.pid!,
    url: new URL(options.healthUrl).origin,
    profileDir,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
      running.delete(service);
    },
  };
  running.add(service);
  return service;
}

/** Runs a child node script (`node --import tsx file arg`) and resolves with its stdout; rejects on failure. */
export function runNodeChild(file: string, arg: string, onSpawn?: (pid: number) => void): Promise<string> {
  return runCommand(process.execPath, ["--import", "tsx", file, arg], onSpawn);
}

/** Runs a command, collects stdout (stderr kept for the error), resolves when it exits 0. */
export function runCommand(
  command: string,
  args: string[],
  onSpawn?: (pid: number) => void,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: repoRoot(), env, stdio: ["ignore", "pipe", "pipe"] });
    if (child.pid) onSpawn?.(child.pid);
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (err += chunk));
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${command} exited ${code}: ${err.slice(-2_000)}`)),
    );
  });
}

/** The main thread's profile in a service's profile folder: the largest one (the loader thread's is small). */
export function mainThreadProfile(profileDir: string | undefined): string | undefined {
  if (!profileDir || !existsSync(profileDir)) return undefined;
  const files = readdirSync(profileDir)
    .filter((file) => file.endsWith(".cpuprofile"))
    .map((file) => join(profileDir, file));
  return files.sort((a, b) => statSync(b).size - statSync(a).size)[0];
}
