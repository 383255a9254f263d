import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";

/** Absolute path of the repository root (the folder holding the root package.json with workspaces). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).workspaces) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error("repository root not found above " + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

/** Folder of the local stack's state (data, logs, pids, env); STACK_DIR overrides. */
export function stackDir(): string {
  return resolve(process.env.STACK_DIR ?? join(repoRoot(), ".stack"));
}

/** Parses `KEY=value` lines (the format of `.stack/env`); blank lines and `#` comments are skipped. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith("#")) continue;
    const eq = trimmed.indexOf("=");
    if (eq <= 0) continue;
    out[trimmed.slice(0, eq)] = trimmed.slice(eq + 1);
  }
  return out;
}

/**
 * The environment a tool or service runs with: `.stack/env` (when the local stack wrote one) under the process
 * environment, so an explicitly exported variable always wins.
 */
export function stackEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  const file = join(stackDir(), "env");
  const fromFile = existsSync(file) ? parseEnvFile(readFileSync(file, "utf8")) : {};
  return { ...fromFile, ...env };
}

/** Parses `schema` against the stack environment and throws one readable error listing every bad variable. */
export function parseEnv<T extends z.ZodType>(schema: T, env = stackEnv()): z.infer<T> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => `  ${issue.path.join(".")}: ${issue.message}`);
  throw new Error(`invalid configuration:\n${lines.join("\n")}\n(is the stack up? run: npm run stack -- up)`);
}

/** Zod helpers for environment values, which are always strings. */
export const envBool = z
  .enum(["true", "false", "1", "0"])
  .transform((value) => value === "true" || value === "1");
export const envInt = z.coerce.number().int();
