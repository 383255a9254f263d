import { join } from "node:path";

export const startedAt = Date.now();
/** Progress, stamped with the seconds since the harness started. */
export const say = (line: string) =>
  console.log(`[faults ${((Date.now() - startedAt) / 1000).toFixed(0).padStart(4)}s] ${line}`);

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

/** The run's settings (faults/README.md): FAULTS_* in the environment. */
export const CONFIG = {
  rate: num("FAULTS_RATE", 150),
  businesses: num("FAULTS_BUSINESSES", 5),
  people: num("FAULTS_PEOPLE", 300),
  baselineMs: num("FAULTS_BASELINE_MS", 10_000),
  settleMs: num("FAULTS_SETTLE_MS", 3_000),
  sessionTimeoutMs: num("FAULTS_WORKER_SESSION_TIMEOUT_MS", 10_000),
  recoveryTimeoutMs: num("FAULTS_RECOVERY_TIMEOUT_MS", 60_000),
  keepStack: process.env.FAULTS_KEEP_STACK === "1",
};

/**
 * The private stack: its own dir and ports, the main stack's jars. Nothing here touches the shared stack. Ports are
 * FAULTS_PORT_BASE (26000) + the usual suffixes: below the kernel's ephemeral range, and away from the private
 * brokers and Connect workers of the integration tests (29092, 28083, 19192...), which may run at the same time.
 */
export function privateStackEnv(root: string): Record<string, string> {
  const portBase = num("FAULTS_PORT_BASE", 26_000);
  return {
    STACK_DIR: join(root, ".stack-faults"),
    STACK_LIB_DIR: process.env.STACK_LIB_DIR ?? join(root, ".stack", "lib"),
    STACK_KAFKA_NODES: "3",
    STACK_PG_PORT: String(portBase + 432),
    STACK_KAFKA_PORT: String(portBase + 92),
    STACK_KAFKA_CONTROLLER_PORT: String(portBase + 93),
    STACK_CONNECT_PORT: String(portBase + 83),
    STACK_REGISTRY_PORT: String(portBase + 81),
    STACK_REGISTRY_MANAGEMENT_PORT: String(portBase + 181),
    STACK_INGEST_PORT: String(portBase + 80),
    STACK_WORKER_PORT: String(portBase + 191),
    STACK_PARTITIONS: "6",
  };
}
