import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startKafka, stopJvm } from "./jvm.ts";
import { credentialsOf, kafkaSecrets } from "./kafka-auth.ts";
import { ensureToolchain } from "./prereqs.ts";
import { isAlive, readPid } from "./proc.ts";
import { type StackSettings, stackSettings } from "./settings.ts";

/** A single Kafka broker of a test's own, with its own SCRAM users, that the test may freeze or kill. */
export interface PrivateBroker {
  brokers: string[];
  settings: StackSettings;
  /** The broker's pid (it throws when the broker is not running). */
  pid(): number;
  /** The credentials of one of its principals (`admin`, `ingest-api`, ...). */
  credentials(principal: Parameters<typeof credentialsOf>[1]): ReturnType<typeof credentialsOf>;
  /** True while its process lives. */
  alive(): boolean;
  /** Starts it again after it was killed (same folder, users and topics). */
  restart(): Promise<void>;
  /** Resumes it if frozen, stops it, and removes its folder. */
  stop(): Promise<void>;
}

/**
 * Starts a private broker under a temporary folder (only the downloaded jars are shared), on `port` and the port
 * after it, or on a random even port below the kernel's ephemeral range, so parallel runs rarely meet.
 */
export async function startPrivateBroker(
  options: { prefix: string; port?: number; partitions?: number } = { prefix: "private-kafka-" },
): Promise<PrivateBroker> {
  const dir = mkdtempSync(join(tmpdir(), options.prefix));
  chmodSync(dir, 0o755);
  const port = options.port ?? 20_000 + 2 * Math.floor(Math.random() * 4_000);
  const base = stackSettings({
    ...process.env,
    STACK_KAFKA_PORT: String(port),
    STACK_KAFKA_CONTROLLER_PORT: String(port + 1),
    STACK_PARTITIONS: String(options.partitions ?? 3),
    STACK_KAFKA_HEAP: "256m",
  });
  const settings: StackSettings = { ...base, dir, logs: join(dir, "logs"), pids: join(dir, "pids") };
  const tools = ensureToolchain(() => {});
  await startKafka(settings, tools);
  return {
    brokers: [`127.0.0.1:${port}`],
    settings,
    pid() {
      const record = readPid(settings.pids, "kafka");
      if (!isAlive(record)) throw new Error("private kafka is not running");
      return record.pid;
    },
    credentials: (principal) => credentialsOf(kafkaSecrets(settings), principal),
    alive: () => isAlive(readPid(settings.pids, "kafka")),
    restart: () => startKafka(settings, tools),
    async stop() {
      const record = readPid(settings.pids, "kafka");
      if (isAlive(record)) {
        process.kill(record.pid, "SIGCONT");
        await stopJvm(settings, "kafka");
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
