import { envInt } from "@crm/config";
import { z } from "zod";

export const ConnectorEnv = z.object({
  // Kafka Connect REST endpoint
  CONNECT_URL: z.string().url(),
  // Debezium's replication role (REPLICATION, reads the outbox publication)
  DEBEZIUM_DATABASE_URL: z.string().url(),
  // superuser: reads pg_replication_slots and prunes the outbox (bypasses RLS, so keep it to operators)
  DATABASE_ADMIN_URL: z.string().url(),
  // slot lag (bytes of WAL not yet confirmed by Debezium) above which outbox_slot_lag_alert is 1; default 256 MiB,
  // far below max_slot_wal_keep_size (4 GB) so someone is paged long before the slot is invalidated
  SLOT_LAG_ALERT_BYTES: envInt.positive().default(256 * 1024 * 1024),
  // monitor: port of GET /metrics and /healthz
  OUTBOX_MONITOR_PORT: envInt.default(8093),
  // monitor: how often slot and connector state are read
  OUTBOX_MONITOR_INTERVAL_MS: envInt.positive().default(5_000),
  // monitor: how often streamed outbox rows are pruned; 0 disables pruning
  OUTBOX_PRUNE_INTERVAL_MS: envInt.nonnegative().default(60_000),
  // streamed rows younger than this stay in the outbox (replay, debugging); default 24 h
  OUTBOX_RETENTION_HOURS: z.coerce.number().nonnegative().default(24),
});
export type ConnectorEnv = z.infer<typeof ConnectorEnv>;
