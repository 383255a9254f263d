import { envInt } from "@crm/config";
import { z } from "zod";

export const WorkerEnv = z.object({
  // services' role (no BYPASSRLS); the worker refuses to start with anything stronger
  DATABASE_URL: z.string().url(),
  // comma-separated host:port list
  KAFKA_BROKERS: z.string().min(1),
  // consumer group; instances sharing it split the partitions
  WORKER_GROUP_ID: z.string().default("resolver-worker"),
  // health and metrics port (default 8091)
  WORKER_PORT: envInt.default(8091),
  WORKER_HOST: z.string().default("127.0.0.1"),
  // attempts for a transiently failing event before it goes to the DLQ
  WORKER_MAX_ATTEMPTS: envInt.default(5),
  // keys applied concurrently within one partition batch; bounded by the pool size
  WORKER_KEY_CONCURRENCY: envInt.default(8),
  // partitions processed at once by this instance
  WORKER_PARTITION_CONCURRENCY: envInt.default(4),
  DATABASE_POOL_SIZE: envInt.default(12),
});
export type WorkerEnv = z.infer<typeof WorkerEnv>;
