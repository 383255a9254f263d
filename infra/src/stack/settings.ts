import { join, resolve } from "node:path";
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
  /** Broker port of node 1; node n listens on `kafkaPort + 2*(n-1)`. */
  kafkaPort: number;
  /** Controller port of node 1; node n listens on `controllerPort + 2*(n-1)`. */
  controllerPort: number;
  /**
   * Kafka nodes (combined broker + controller). 1 is the development default; 3 (`STACK_KAFKA_NODES=3` or
   * `STACK_MODE=cluster`) is the cluster mode: replication factor 3, `min.insync.replicas=2`.
   */
  kafkaNodes: number;
  connectPort: number;
  registryPort: number;
  /** Apicurio's Quarkus management interface (health, metrics). */
  registryManagementPort: number;
  /** Connect's group.id; a second Connect cluster on the same Kafka needs its own (and gets its own topics). */
  connectGroup: string;
  ingestPort: number;
  /** ingest-api's Segment-compatible listener (issue 15). */
  segmentPort: number;
  workerPort: number;
  segmentsPort: number;
  automationsPort: number;
  consolePort: number;
  kafkaHeap: string;
  connectHeap: string;
  registryHeap: string;
  partitions: number;
  /**
   * retention.ms of the topics holding events as received (RETAINED_TOPICS: events.raw.v1, events.dlq.v1), from
   * STACK_EVENT_RETENTION_DAYS (default 7, fractions allowed); applied to existing topics on every `up`.
   */
  eventRetentionMs: number;
  readyTimeoutMs: number;
}

/** Replication factor of every topic: 3 in cluster mode (or the node count, if smaller), else 1. */
export function replicationFactor(s: StackSettings): number {
  return Math.min(3, s.kafkaNodes);
}

/** `min.insync.replicas`: with acks=all, a write is acknowledged only once this many replicas have it. */
export function minInsyncReplicas(s: StackSettings): number {
  return s.kafkaNodes >= 3 ? 2 : 1;
}

export function stackSettings(env: NodeJS.ProcessEnv = process.env): StackSettings {
  // `env` decides the dir too, so a test can build a private stack's settings without touching process.env.
  const dir = env.STACK_DIR ? resolve(env.STACK_DIR) : stackDir();
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
    kafkaNodes: int("STACK_KAFKA_NODES", env.STACK_MODE === "cluster" ? 3 : 1),
    connectPort: int("STACK_CONNECT_PORT", 8083),
    registryPort: int("STACK_REGISTRY_PORT", 8081),
    registryManagementPort: int("STACK_REGISTRY_MANAGEMENT_PORT", int("STACK_REGISTRY_PORT", 8081) + 1000),
    connectGroup: env.STACK_CONNECT_GROUP ?? "crm-connect",
    ingestPort: int("STACK_INGEST_PORT", 8080),
    segmentPort: int("STACK_SEGMENT_PORT", 8082),
    workerPort: int("STACK_WORKER_PORT", 8091),
    // SPEC section 11: the segments and automations services' health/metrics, the ops console's UI
    segmentsPort: int("STACK_SEGMENTS_PORT", 8094),
    automationsPort: int("STACK_AUTOMATIONS_PORT", 8095),
    consolePort: int("STACK_CONSOLE_PORT", 8090),
    // Heaps are capped so Postgres + 3 JVMs + the Node services + the tests fit in a few GiB.
    kafkaHeap: env.STACK_KAFKA_HEAP ?? "512m",
    connectHeap: env.STACK_CONNECT_HEAP ?? "512m",
    registryHeap: env.STACK_REGISTRY_HEAP ?? "320m",
    partitions: int("STACK_PARTITIONS", 12),
    eventRetentionMs: Math.round(
      (Number(env.STACK_EVENT_RETENTION_DAYS) > 0 ? Number(env.STACK_EVENT_RETENTION_DAYS) : 7) *
        24 *
        60 *
        60 *
        1000,
    ),
    readyTimeoutMs: int("STACK_READY_TIMEOUT_MS", 180_000),
  };
}
