import { rmSync } from "node:fs";
import { repoRoot } from "@crm/config";
import type { StackSettings } from "@crm/infra/stack";
import { preparePipeline } from "@crm/pipeline";
import { CONFIG, privateStackEnv, say } from "../config.ts";
import type { FaultContext } from "../faults.ts";

export type Stack = typeof import("@crm/infra/stack");

export interface PrivateStack {
  stack: Stack;
  s: StackSettings;
  tools: FaultContext["tools"];
}

/** The private stack's settings and toolchain; unless kept, whatever an earlier run left is stopped and wiped. */
export async function preparePrivateStack(): Promise<PrivateStack> {
  // The launcher reads STACK_DIR and the knobs from the process environment.
  Object.assign(process.env, privateStackEnv(repoRoot()));
  const stack = await import("@crm/infra/stack");
  const s = stack.stackSettings(process.env);
  const tools = stack.ensureToolchain(say);
  if (!CONFIG.keepStack) {
    // A clean start: stop whatever a crashed earlier run left behind, and wipe its data (never the shared stack).
    await stack.stackDown(s, () => {});
    rmSync(s.dir, { recursive: true, force: true });
  }
  say(
    `private stack in ${s.dir} (PG ${s.pgPort}, Kafka ${stack.kafkaBrokers(s).join(",")}, Connect ${s.connectPort})`,
  );
  return { stack, s, tools };
}

/** Three brokers, Postgres, Connect and the registry up; migrated, schemas and connector registered. */
export async function bringUpPrivateStack({ s }: PrivateStack): Promise<Record<string, string>> {
  const { env } = await preparePipeline({ settings: s, log: say });
  // The private endpoints win over anything exported for the shared stack.
  Object.assign(process.env, env);
  return env;
}

/** Stops the private stack, unless FAULTS_KEEP_STACK=1; data and logs stay in .stack-faults until the next run. */
export async function leavePrivateStack({ stack, s }: PrivateStack): Promise<void> {
  if (CONFIG.keepStack) {
    say(`private stack kept (FAULTS_KEEP_STACK=1): STACK_DIR=${s.dir}`);
    return;
  }
  await stack.stackDown(s, (line) => say(`stack: ${line}`));
}
