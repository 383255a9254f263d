import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The worker's Prometheus metrics (SPEC 10). */
export function createWorkerMetrics() {
  const registry = new Registry();
  return {
    registry,
    applied: new Counter({
      name: "resolver_events_applied_total",
      help: "Events applied, by outcome",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    dlq: new Counter({
      name: "resolver_dlq_total",
      help: "Events sent to events.dlq.v1",
      labelNames: ["error_class"],
      registers: [registry],
    }),
    retries: new Counter({
      name: "resolver_retries_total",
      help: "Transient failures retried",
      registers: [registry],
    }),
    lag: new Gauge({
      name: "resolver_consumer_lag",
      help: "Messages behind the partition end after the last batch",
      labelNames: ["partition"],
      registers: [registry],
    }),
    transactionSeconds: new Histogram({
      name: "resolver_transaction_seconds",
      help: "Wall time of one resolve transaction (locks held for at most this long)",
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
  };
}
export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
