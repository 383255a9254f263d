import { spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import { ServiceProcess } from "@crm/process";

/** A service child process the bench started (its own ports, the shared stack), logging to a file. */
export interface BenchService {
  name: string;
  pid: number;
  url: string;
  /** Where --cpu-prof writes when the process exits, if profiling (see mainThreadProfile). */
  profileDir: string | undefined;
  stop: () => Promise<void>;
}

/** Stops every service still running (a failed scenario, Ctrl-C). */
export { stopAllServices } from "@crm/process";

/**
 * Starts `entry` (a service's src/main.ts) as a ServiceProcess at LOG_LEVEL=warn, its output appended to
 * `logFile`, optionally under --cpu-prof, and waits until `healthUrl` answers. The services exit through
 * process.exit on SIGTERM, which is when --cpu-prof writes its profile.
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
  const service = new ServiceProcess({
    name: options.name,
    entry: options.entry,
    args: options.args,
    env: { LOG_LEVEL: "warn", ...options.env },
    healthUrl: options.healthUrl,
    output: { file: options.logFile },
    // One folder per service: --cpu-prof writes a profile per thread (tsx's loader runs in a worker thread).
    cpuProfileDir: options.profileDir ? join(options.profileDir, options.name) : undefined,
  });
  await service.start();
  return {
    name: service.name,
    pid: service.pid!,
    url: service.url,
    profileDir: service.cpuProfileDir,
    stop: async () => {
      await service.stop();
    },
  };
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
