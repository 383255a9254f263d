import type { Pool } from "@crm/db";
import type { Kafka } from "@crm/kafka";

export interface GroupLag {
  groupId: string;
  topic: string;
  partitions: { partition: number; committed: string; end: string; lag: string }[];
  total: string;
}

export interface ConnectorState {
  /** RUNNING | PAUSED | FAILED | UNASSIGNED | missing | unreachable | not configured */
  state: string;
  tasks: { id: number; state: string; trace?: string | undefined }[];
  trace?: string | undefined;
}

export interface SlotState {
  slot_name: string;
  active: boolean;
  wal_status: string | null;
  lag_bytes: string | null;
  retained_bytes: string | null;
}

export interface ServiceHealth {
  name: string;
  url: string;
  /** up | not running | unhealthy (HTTP status) */
  state: string;
}

/**
 * Committed offset and lag of the pipeline's consumer groups, per partition: the groups whose name starts with one
 * of `prefixes` (the services' own), shortest names first (the service's group before the copies tests make of
 * it), at most `maxGroups` (a shared development stack collects hundreds of test groups).
 */
export async function consumerLag(kafka: Kafka, prefixes: string[], maxGroups = 12): Promise<GroupLag[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { groups } = await admin.listGroups();
    const names = groups
      .map((g) => g.groupId)
      .filter((id) => prefixes.some((prefix) => id.startsWith(prefix)))
      .sort((a, b) => a.length - b.length || a.localeCompare(b))
      .slice(0, maxGroups);
    const out: GroupLag[] = [];
    const ends = new Map<string, Map<number, string>>();
    for (const groupId of names) {
      let offsets: { topic: string; partitions: { partition: number; offset: string }[] }[];
      try {
        offsets = await admin.fetchOffsets({ groupId });
      } catch {
        continue;
      }
      for (const { topic, partitions } of offsets) {
        if (!ends.has(topic)) {
          try {
            const topicOffsets = await admin.fetchTopicOffsets(topic);
            ends.set(topic, new Map(topicOffsets.map((o) => [o.partition, o.high])));
          } catch {
            continue;
          }
        }
        const end = ends.get(topic)!;
        const rows = partitions
          .map(({ partition, offset }) => {
            const high = BigInt(end.get(partition) ?? "0");
            const committed = BigInt(offset);
            const lag = committed < 0n ? high : high - committed;
            return {
              partition,
              committed: offset,
              end: high.toString(),
              lag: (lag < 0n ? 0n : lag).toString(),
            };
          })
          .sort((a, b) => a.partition - b.partition);
        const total = rows.reduce((sum, r) => sum + BigInt(r.lag), 0n);
        if (rows.some((r) => BigInt(r.committed) >= 0n)) {
          out.push({ groupId, topic, partitions: rows, total: total.toString() });
        }
      }
    }
    return out;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** The connector's and its tasks' state from Connect's REST API (Basic auth as every tool sends it). */
export async function connectorState(options: {
  connectUrl: string | undefined;
  name: string;
  username?: string | undefined;
  password?: string | undefined;
}): Promise<ConnectorState> {
  if (!options.connectUrl) return { state: "not configured", tasks: [] };
  const headers: Record<string, string> = { accept: "application/json" };
  if (options.username && options.password) {
    headers.authorization = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString("base64")}`;
  }
  try {
    const res = await fetch(`${options.connectUrl}/connectors/${encodeURIComponent(options.name)}/status`, {
      headers,
      signal: AbortSignal.timeout(3_000),
    });
    if (res.status === 404) return { state: "missing", tasks: [] };
    if (!res.ok) return { state: `unreachable (HTTP ${res.status})`, tasks: [] };
    const body = (await res.json()) as {
      connector: { state: string; trace?: string };
      tasks: { id: number; state: string; trace?: string }[];
    };
    return {
      state: body.connector.state,
      trace: body.connector.trace?.split("\n")[0],
      tasks: body.tasks.map((t) => ({ id: t.id, state: t.state, trace: t.trace?.split("\n")[0] })),
    };
  } catch {
    return { state: "unreachable", tasks: [] };
  }
}

/**
 * Replication slots (SPEC 8: lag bytes and wal_status): pg_replication_slots is readable by every role and the
 * WAL positions it is compared with are public functions, so this needs no grant.
 */
export async function slotStates(db: Pool): Promise<SlotState[]> {
  const { rows } = await db.query<SlotState>(
    `SELECT slot_name, active, wal_status,
            pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag_bytes,
            pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained_bytes
     FROM pg_replication_slots ORDER BY slot_name`,
  );
  return rows;
}

/** Each service's /healthz: "up", "not running" (nothing answers), or the status it answered. */
export async function serviceHealth(services: { name: string; url: string }[]): Promise<ServiceHealth[]> {
  return Promise.all(
    services.map(async ({ name, url }) => {
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_500) });
        return { name, url, state: res.ok ? "up" : `unhealthy (HTTP ${res.status})` };
      } catch {
        return { name, url, state: "not running" };
      }
    }),
  );
}
