import { Counter, Gauge, Histogram, Registry } from "prom-client";

const LOCK_BUCKETS = [
  0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1,
];

/** The worker's Prometheus metrics (SPEC 10). Labels never carry identifiers, only bounded values. */
export function createWorkerMetrics() {
  const registry = new Registry();
  return {
    registry,
    applied: new Counter({
      name: "resolver_events_applied_total",
      help: "Events applied, by outcome (created, updated, merged, unchanged, duplicate)",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    merges: new Counter({
      name: "resolver_merges_total",
      help: "Contacts merged away into a survivor",
      registers: [registry],
    }),
    conflicts: new Counter({
      name: "resolver_identity_conflicts_total",
      help: "Links or merges refused because one contact would hold two external_ids",
      registers: [registry],
    }),
    dlq: new Counter({
      name: "resolver_dlq_total",
      help: "Events sent to the dead-letter topic",
      labelNames: ["error_class"],
      registers: [registry],
    }),
    suppressed: new Counter({
      name: "resolver_events_suppressed_total",
      help: "Events dropped because they carry an identifier of an erased person (suppression list, issue 18)",
      registers: [registry],
    }),
    retries: new Counter({
      name: "resolver_retries_total",
      help: "Failed attempts that were retried",
      labelNames: ["reason"],
      registers: [registry],
    }),
    lag: new Gauge({
      name: "resolver_consumer_lag",
      help: "Messages between the committed offset and the partition end, after the last batch",
      labelNames: ["topic", "partition"],
      registers: [registry],
    }),
    lockWaitSeconds: new Histogram({
      name: "resolver_lock_wait_seconds",
      help: "Time waiting for the identifier advisory locks (measured in Postgres)",
      buckets: LOCK_BUCKETS,
      registers: [registry],
    }),
    lockHoldSeconds: new Histogram({
      name: "resolver_lock_hold_seconds",
      help: "Time the identifier locks were held (measured in Postgres): last lock taken until COMMIT completed",
      buckets: LOCK_BUCKETS,
      registers: [registry],
    }),
    transactionSeconds: new Histogram({
      name: "resolver_transaction_seconds",
      help: "Wall time of one resolve transaction as the worker sees it, pool wait included",
      buckets: LOCK_BUCKETS,
      registers: [registry],
    }),
  };
}
export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
