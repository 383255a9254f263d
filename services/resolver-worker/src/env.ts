import { envInt } from "@crm/config";
import { TOPICS } from "@crm/kafka";
import { z } from "zod";

export const WorkerEnv = z.object({
  // services' role (no BYPASSRLS); the worker refuses to start with anything stronger
  DATABASE_URL: z.string().url(),
  // comma-separated host:port list
  KAFKA_BROKERS: z.string().min(1),
  // this service's SCRAM principal (written by `stack up`); it may read events.raw.v1 and write events.dlq.v1 only.
  // Unset: no SASL
  KAFKA_RESOLVER_WORKER_USERNAME: z.string().min(1).optional(),
  KAFKA_RESOLVER_WORKER_PASSWORD: z.string().min(1).optional(),
  // key of the suppression list's hashes (issue 18; written by `stack up`, the same value as ingest-api's): events
  // carrying an erased person's identifier are dropped. Required: without it an erased person could come back
  ERASURE_HASH_SECRET: z.string().min(16),
  // topic of raw events; tests point a worker at their own topic so they never share one
  WORKER_TOPIC: z.string().min(1).default(TOPICS.raw),
  // where events that cannot be applied go, with the reason in headers
  WORKER_DLQ_TOPIC: z.string().min(1).default(TOPICS.dlq),
  // consumer group; instances sharing it split the partitions
  WORKER_GROUP_ID: z.string().default("resolver-worker"),
  // health and metrics port (default 8091)
  WORKER_PORT: envInt.default(8091),
  WORKER_HOST: z.string().default("127.0.0.1"),
  // attempts for an event failing with a statement error (the database answered) before it goes to the DLQ
  WORKER_MAX_ATTEMPTS: envInt.default(5),
  // how long (ms) an event may keep failing, any failure kind, while the database answers a probe query, before it
  // goes to the DLQ with its last error. An outage (probe fails too) restarts the clock: nothing is dead-lettered
  // for it. Too low: a slow lock or a database restart between probes can dead-letter a good event
  WORKER_EVENT_MAX_RETRY_MS: envInt.positive().default(30_000),
  // keys applied concurrently within one partition batch; bounded by the pool size
  WORKER_KEY_CONCURRENCY: envInt.default(8),
  // events applied in one transaction (different keys, per-key order kept; a failing chunk is redone one by one);
  // 1 = one transaction per event. Each event's locks are held until its chunk commits (all of a chunk's locks are
  // taken first), so lock hold grows with it: 5, and WORKER_BACKLOG_EVENTS_PER_TRANSACTION for a real backlog
  WORKER_EVENTS_PER_TRANSACTION: envInt.default(5),
  // events per transaction while a partition lags by WORKER_BACKLOG_MIN_LAG or more (catching up): the set-based
  // app.resolve_contacts costs ~400 µs of Postgres CPU per event in chunks of 20-50 against ~740-840 µs in chunks
  // of 5 (pgbench of the bench mix, 8 clients, busy machine); lock hold p95 in the consumer test's overlapping
  // load on that machine: ~375 ms at 5, ~670 ms at 10, ~900 ms at 20, hence only for a backlog
  WORKER_BACKLOG_EVENTS_PER_TRANSACTION: envInt.default(50),
  WORKER_BACKLOG_MIN_LAG: envInt.default(1_000),
  // ...but only while a partition lags by at least this many messages (falling behind); below it, one event per
  // transaction. 0 = always chunk (the default): on a quiet machine at 1,000 events/s (bench scenario 4, same stack,
  // minutes apart) one event per transaction below a lag of 16 fell behind (202 -> commit p95 16.4 s, Postgres
  // 1,741 µs per event, lock hold p95 95 ms) where chunks of up to 5 kept e2e p95 at 1.7 s and lock hold p95 at
  // 42 ms. Keep it small: lag is latency.
  WORKER_CHUNK_MIN_LAG: envInt.default(0),
  // partitions processed at once by this instance: the batches of one fetch all run at once, so their chunks can
  // be combined (below)
  WORKER_PARTITION_CONCURRENCY: envInt.default(16),
  // chunks and single events that the runners of every partition submit within this many ms of each other go in
  // one transaction (at most WORKER_COMBINE_MAX_EVENTS events): app.resolve_contacts costs a fixed ~1.4 ms of
  // Postgres CPU per transaction and per business in it, and at 1,000 events/s over 12 partitions one partition's
  // chunk is a few events of a few businesses. 0 = every chunk its own transaction
  WORKER_COMBINE_LINGER_MS: envInt.default(2),
  WORKER_COMBINE_MAX_EVENTS: envInt.positive().default(50),
  // a fetch waits for this many bytes (or 100 ms): fewer, fuller fetches. Bench scenario 4 at 1,000 events/s, warm
  // stack, minutes apart: 16384 took Kafka from 0.45 to 0.26 core and Postgres from 0.52 to 0.44, but e2e p95 went
  // from 253 to 292 ms (and 556 to 693 ms at 2,500/s): a trade for a busier machine, not the default
  WORKER_FETCH_MIN_BYTES: envInt.positive().default(1),
  // how often a long batch heartbeats and commits its applied prefix (ms); lower = less replay after a crash
  WORKER_COMMIT_INTERVAL_MS: envInt.default(1_000),
  // a member that stopped heartbeating (crashed) keeps its partitions this long (ms); Kafka's minimum is 6000
  WORKER_SESSION_TIMEOUT_MS: envInt.default(30_000),
  // concurrent resolve transactions of this instance; beyond the database's cores it only adds lock hold time
  DATABASE_POOL_SIZE: envInt.default(8),
});
export type WorkerEnv = z.infer<typeof WorkerEnv>;
