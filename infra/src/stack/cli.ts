import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseEnvFile } from "@crm/config";
import { composeEndpoints, writeComposeEnv } from "./compose-env.ts";
import { type JvmPart, jvmLogFile } from "./jvm.ts";
import { pgLogFile, wipePostgres } from "./postgres.ts";
import { type StackSettings, stackSettings } from "./settings.ts";
import { stackDown, stackParts, stackStatus, stackUp } from "./stack.ts";

const log = (line: string) => console.log(`[stack] ${line}`);

/** The log file of a stack part, or of a service `npm start` ran (`.stack/logs/<name>.log`). */
function logFileOf(s: StackSettings, name: string): string {
  if (name === "postgres") return pgLogFile(s);
  return (stackParts(s) as string[]).includes(name)
    ? jvmLogFile(s, name as JvmPart)
    : join(s.logs, `${name}.log`);
}

/** Logs of the services (services/<name>), one per instance: `resolver-worker.log`, `resolver-worker-2.log`. */
function serviceLogNames(s: StackSettings): string[] {
  if (!existsSync(s.logs)) return [];
  const services = readdirSync(join(s.root, "services"));
  return readdirSync(s.logs)
    .filter((file) => file.endsWith(".log"))
    .map((file) => file.slice(0, -".log".length))
    .filter((name) => services.some((service) => name === service || name.startsWith(`${service}-`)))
    .sort();
}

function logs(s: StackSettings, args: string[]): void {
  const follow = args.includes("-f");
  const named = args.filter((a) => a !== "-f");
  const names = named.length > 0 ? named : [...stackParts(s), ...serviceLogNames(s)];
  const missing = named.filter((name) => !existsSync(logFileOf(s, name)));
  if (missing.length > 0) {
    log(
      `no log for ${missing.join(", ")}; there are: ${[...stackParts(s), ...serviceLogNames(s)].join(", ")}`,
    );
    process.exitCode = 2;
    return;
  }
  const files = names.map((name) => logFileOf(s, name)).filter((file) => existsSync(file));
  if (files.length === 0) {
    log("no logs yet");
    return;
  }
  spawn("tail", ["-n", "60", ...(follow ? ["-F"] : []), ...files], { stdio: "inherit" });
}

async function reset(s: StackSettings): Promise<void> {
  await stackDown(s);
  wipePostgres(s);
  // Jars in .stack/lib are kept: they are a cache of Maven artifacts, not state.
  const kafkaDirs = readdirSync(s.dir).filter((entry) => /^kafka(-\d+)?$/.test(entry));
  for (const entry of [
    ...kafkaDirs,
    "kafka-cluster-id",
    "kafka-nodes",
    "connect",
    "logs",
    "pids",
    "env",
    "secrets.json",
    "kafka-auth",
    "kafka-secrets.json",
  ]) {
    rmSync(join(s.dir, entry), { recursive: true, force: true });
  }
  log("stack data wiped");
}

async function main(): Promise<void> {
  const [command = "status", ...args] = process.argv.slice(2);
  const s = stackSettings();
  switch (command) {
    case "up":
      await stackUp(s);
      break;
    case "down":
      await stackDown(s);
      break;
    case "status":
      process.exitCode = (await stackStatus(s)) ? 0 : 3;
      break;
    case "logs":
      logs(s, args);
      break;
    case "reset":
      await reset(s);
      break;
    case "compose-env": {
      // docker-compose.yml's secrets; the endpoints to export for tools and tests against the containers.
      const env = writeComposeEnv(s.root);
      log(`wrote ${join(s.root, ".env")} (keep it private; compose reads it); endpoints:`);
      for (const [key, value] of Object.entries(composeEndpoints(env))) console.log(`${key}=${value}`);
      break;
    }
    case "env":
      console.log(parseEnvFile(readFileSync(join(s.dir, "env"), "utf8")));
      break;
    default:
      console.error(
        "usage: npm run stack -- up|down|status|logs [part or service...] [-f]|reset|compose-env",
      );
      process.exitCode = 2;
  }
}

main().then(
  () => {
    // `logs -f` keeps its tail child; everything else is done.
    if (process.argv[2] !== "logs") process.exit();
  },
  (error) => {
    console.error(`[stack] ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
