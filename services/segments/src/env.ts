import { envInt } from "@crm/config";
import { TOPICS } from "@crm/kafka";
import { z } from "zod";

export const SegmentsEnv = z.object({
  // services' role (no BYPASSRLS); the service refuses to start with anything stronger
  DATABASE_URL: z.string().url(),
  // comma-separated host:port list
  KAFKA_BROKERS: z.string().min(1),
  // this service's SCRAM principal (written by `stack up`): reads contact.updated.v1 and events.applied.v1, groups
  // prefixed "segments". Unset: no SASL
  KAFKA_SEGMENTS_USERNAME: z.string().min(1).optional(),
  KAFKA_SEGMENTS_PASSWORD: z.string().min(1).optional(),
  // consumer group of the triggers; instances sharing it split the partitions
  SEGMENTS_GROUP_ID: z.string().min(1).default("segments"),
  // topics whose messages say "contact X of business B may have changed"; tests point at their own
  SEGMENTS_CONTACTS_TOPIC: z.string().min(1).default(TOPICS.contactUpdated),
  SEGMENTS_EVENTS_TOPIC: z.string().min(1).default("events.applied.v1"),
  // health and metrics port (default 8094)
  SEGMENTS_PORT: envInt.default(8094),
  SEGMENTS_HOST: z.string().default("127.0.0.1"),
  // how often memberships whose windows slid are re-evaluated (ms); an exit lands at most this + one evaluation
  // after its time. Lower = more queries of the due index
  SEGMENTS_SWEEP_INTERVAL_MS: envInt.positive().default(60_000),
  // how often definitions are checked for a new version, an archive, or an unfinished job (ms)
  SEGMENTS_DEFINITIONS_POLL_MS: envInt.positive().default(1_000),
  // contacts per backfill/reconcile transaction: bigger = faster backfill, longer per-contact locks
  SEGMENTS_BACKFILL_PAGE: envInt.positive().default(500),
  // contacts per trigger or sweep transaction (one business each): bounds the work one business does in a turn
  SEGMENTS_CHUNK: envInt.positive().default(100),
  // partition batches kafkajs hands over at once (each only decodes its triggers for the next round and returns)
  SEGMENTS_PARTITION_CONCURRENCY: envInt.positive().default(32),
  // triggers waiting for a round beyond which fetching pauses until the next round takes them (memory bound of a
  // backlog; a trigger is a contact id and a few names)
  SEGMENTS_MAX_PENDING: envInt.positive().default(20_000),
  // how long a round's first trigger waits for others (ms): larger rounds are fewer, larger transactions
  SEGMENTS_LINGER_MS: envInt.default(100),
  // transactions a round runs at once (one business chunk each); bounded by DATABASE_POOL_SIZE. Bench scenario 8
  // (1,000 events/s, 10 businesses x 50 segments), accepted -> entered p95: 9.0-12.0 s with 3, 7.4 with 4, 3.8-4.6
  // with 6 (a round's chunks wait on commits and locks, not only CPU; the next round waits for its slowest), 3.2 with
  // 8 but the API then got only 736 of 1,000 events/s in
  SEGMENTS_EVALUATION_CONCURRENCY: envInt.positive().default(6),
  // a member that stopped heartbeating (crashed) keeps its partitions this long (ms); Kafka's minimum is 6000
  SEGMENTS_SESSION_TIMEOUT_MS: envInt.default(30_000),
  DATABASE_POOL_SIZE: envInt.default(8),
});
export type SegmentsEnv = z.infer<typeof SegmentsEnv>;
