import { join } from "node:path";
import { repoRoot, stackDir } from "@crm/config";

/** Every knob of the local stack, read from the environment with defaults that fit a 2-core machine. */
export interface StackSettings {
  root: string;
  dir: string;
  /** Jars resolved from Maven (a cache, not state); STACK_LIB_DIR lets several stacks share one. */
  lib: string;
  logs: string;
  pids: string;
  host: string;
  pgPort: number;
  kafkaPort: number;
  controllerPort: number;
  connectPort: number;
  registryPort: number;
  /** Apicurio's Quarkus management interface (health, metrics). */
  registryManagementPort: number;
  /** Connect's group.id; a second Connect cluster on the same Kafka needs its own (and gets its own topics). */
  connectGroup: string;
  ingestPort: number;
  workerPort: number;
  kafkaHeap: string;
  connectHeap: string;
  registryHeap: string;
  partitions: number;
  readyTimeoutMs: number;
}

export function stackSettings(env: NodeJS.ProcessEnv = process.env): StackSettings {
  const dir = stackDir();
  const int = (name: string, fallback: number) => Number(env[name] ?? fallback);
  return {
    root: repoRoot(),
    dir,
    lib: env.STACK_LIB_DIR ?? join(dir, "lib"),
    logs: join(dir, "logs"),
    pids: join(dir, "pids"),
    host: "127.0.0.1",
    pgPort: int("STACK_PG_PORT", 55432),
    kafkaPort: int("STACK_KAFKA_PORT", 9092),
    controllerPort: int("STACK_KAFKA_CONTROLLER_PORT", 9093),
    connectPort: int("STACK_CONNECT_PORT", 8083),
    registryPort: int("STACK_REGISTRY_PORT", 8081),
    registryManagementPort: int("STACK_REGISTRY_MANAGEMENT_PORT", int("STACK_REGISTRY_PORT", 8081) + 1000),
    connectGroup: env.STACK_CONNECT_GROUP ?? "crm-connect",
    ingestPort: int("STACK_INGEST_PORT", 8080),
    workerPort: int("STACK_WORKER_PORT", 8091),
    // Heaps are capped so Postgres + 3 JVMs + the Node services + the tests fit in a few GiB.
    kafkaHeap: env.STACK_KAFKA_HEAP ?? "512m",
    connectHeap: env.STACK_CONNECT_HEAP ?? "512m",
    registryHeap: env.STACK_REGISTRY_HEAP ?? "320m",
    partitions: int("STACK_PARTITIONS", 12),
    readyTimeoutMs: int("STACK_READY_TIMEOUT_MS", 180_000),
  };
}
