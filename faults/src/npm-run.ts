import { spawn } from "node:child_process";
import { repoRoot } from "@crm/config";

/** `npm run <args>` with `env` over the harness's environment; resolves with its output, rejects on failure. */
export function npm(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("npm", ["run", "--silent", ...args], {
      cwd: repoRoot(),
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.once("exit", (code) =>
      code === 0
        ? resolve(output)
        : reject(new Error(`npm run ${args.join(" ")} failed (${code}):\n${output}`)),
    );
  });
}
