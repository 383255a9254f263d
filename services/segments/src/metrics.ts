import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The service's Prometheus metrics. Labels carry bounded values only (never a business, segment or contact id). */
export function createSegmentsMetrics() {
  const registry = new Registry();
  return {
    registry,
    evaluations: new Counter({
      name: "segments_evaluations_total",
      help: "(contact, segment) results computed, by what asked (event, contact, merge, time, backfill, edit, archive)",
      labelNames: ["cause"],
      registers: [registry],
    }),
    changes: new Counter({
      name: "segments_membership_changes_total",
      help: "Membership changes written to segment_outbox, by change (entered, exited)",
      labelNames: ["change"],
      registers: [registry],
    }),
    triggerLag: new Gauge({
      name: "segments_trigger_lag_messages",
      help: "Messages of the trigger topics not yet handled, summed over the partitions of the last batches",
      labelNames: ["topic"],
      registers: [registry],
    }),
    triggerDelay: new Histogram({
      name: "segments_trigger_delay_seconds",
      help: "From a trigger message reaching Kafka to its contact's memberships committed",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    sweepSeconds: new Histogram({
      name: "segments_sweep_duration_seconds",
      help: "Wall time of one sweep of due memberships",
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    sweepOverdue: new Gauge({
      name: "segments_sweep_overdue_seconds",
      help: "How late the most overdue membership re-evaluated by the last sweep was",
      registers: [registry],
    }),
    jobPages: new Counter({
      name: "segments_job_pages_total",
      help: "Backfill/edit/archive pages committed, by kind",
      labelNames: ["kind"],
      registers: [registry],
    }),
    jobsRunning: new Gauge({
      name: "segments_jobs_pending",
      help: "Segments whose memberships are not yet at their current definition",
      registers: [registry],
    }),
    transactionSeconds: new Histogram({
      name: "segments_transaction_seconds",
      help: "Wall time of the service's transactions, by tag",
      labelNames: ["tag"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
  };
}
export type SegmentsMetrics = ReturnType<typeof createSegmentsMetrics>;
