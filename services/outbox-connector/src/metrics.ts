import { Counter, Gauge, Registry } from "prom-client";

/** Outbox and replication slot metrics (SPEC 8, 10); `outbox_slot_lag_alert` is what alerting rules watch. */
export function createOutboxMetrics() {
  const registry = new Registry();
  return {
    registry,
    connectorRunning: new Gauge({
      name: "outbox_connector_running",
      help: "1 when the Debezium connector and all its tasks are RUNNING",
      labelNames: ["connector"],
      registers: [registry],
    }),
    slotLag: new Gauge({
      name: "outbox_slot_lag_bytes",
      help: "WAL bytes written since the slot's confirmed_flush_lsn (changes not yet confirmed delivered)",
      labelNames: ["slot"],
      registers: [registry],
    }),
    slotRetained: new Gauge({
      name: "outbox_slot_retained_wal_bytes",
      help: "WAL bytes the slot keeps on disk (since restart_lsn)",
      labelNames: ["slot"],
      registers: [registry],
    }),
    slotActive: new Gauge({
      name: "outbox_slot_active",
      help: "1 when a consumer is attached to the slot",
      labelNames: ["slot"],
      registers: [registry],
    }),
    slotWalStatus: new Gauge({
      name: "outbox_slot_wal_status",
      help: "1 for the slot's current wal_status (reserved, extended, unreserved, lost; missing: no slot)",
      labelNames: ["slot", "status"],
      registers: [registry],
    }),
    lagAlert: new Gauge({
      name: "outbox_slot_lag_alert",
      help: "1 when the slot lag is above the threshold, or the slot is missing or lost",
      labelNames: ["slot"],
      registers: [registry],
    }),
    lagThreshold: new Gauge({
      name: "outbox_slot_lag_alert_threshold_bytes",
      help: "SLOT_LAG_ALERT_BYTES",
      registers: [registry],
    }),
    pruned: new Counter({
      name: "outbox_pruned_rows_total",
      help: "Streamed outbox rows deleted",
      registers: [registry],
    }),
  };
}
export type OutboxMetrics = ReturnType<typeof createOutboxMetrics>;
