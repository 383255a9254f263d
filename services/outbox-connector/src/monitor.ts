import type pg from "pg";
import { connectorStatus, type SlotHealth, slotHealth } from "./connector.ts";
import type { OutboxMetrics } from "./metrics.ts";

const WAL_STATUSES = ["reserved", "extended", "unreserved", "lost", "missing"] as const;

export interface OutboxHealth {
  connector: string;
  tasks: string[];
  slot: SlotHealth | undefined;
  lagAlert: boolean;
  thresholdBytes: number;
}

/** True when the slot needs a human: lag above the threshold, no slot at all, or WAL already lost. */
export function lagAlert(slot: SlotHealth | undefined, thresholdBytes: number): boolean {
  if (!slot || slot.wal_status === "lost") return true;
  return (slot.lag_bytes ?? 0) > thresholdBytes;
}

/** Reads connector state and slot health once, and (when given metrics) updates the gauges. */
export async function readOutboxHealth(deps: {
  connectUrl: string;
  connectorName: string;
  slot: string;
  db: pg.Pool | string;
  thresholdBytes: number;
  metrics?: OutboxMetrics;
}): Promise<OutboxHealth> {
  const [status, slot] = await Promise.all([
    connectorStatus(deps.connectUrl, deps.connectorName).then(
      (s) => s ?? ("NOT REGISTERED" as const),
      () => "CONNECT UNREACHABLE" as const,
    ),
    slotHealth(deps.db, deps.slot),
  ]);
  const tasks = typeof status === "string" ? [] : status.tasks.map((t) => t.state);
  const health: OutboxHealth = {
    connector: typeof status === "string" ? status : status.connector.state,
    tasks,
    slot,
    lagAlert: lagAlert(slot, deps.thresholdBytes),
    thresholdBytes: deps.thresholdBytes,
  };
  const m = deps.metrics;
  if (m) {
    const running = health.connector === "RUNNING" && tasks.length > 0 && tasks.every((t) => t === "RUNNING");
    m.connectorRunning.set({ connector: deps.connectorName }, running ? 1 : 0);
    m.slotLag.set({ slot: deps.slot }, slot?.lag_bytes ?? 0);
    m.slotRetained.set({ slot: deps.slot }, slot?.retained_bytes ?? 0);
    m.slotActive.set({ slot: deps.slot }, slot?.active ? 1 : 0);
    const current = slot?.wal_status ?? "missing";
    for (const status of WAL_STATUSES)
      m.slotWalStatus.set({ slot: deps.slot, status }, status === current ? 1 : 0);
    m.lagAlert.set({ slot: deps.slot }, health.lagAlert ? 1 : 0);
    m.lagThreshold.set(deps.thresholdBytes);
  }
  return health;
}
