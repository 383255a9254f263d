import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { stackEnv } from "@crm/config";
import { NonRetriableError } from "@crm/errors";
import { poll } from "@crm/process";
import pg from "pg";

const CONFIG_FILE = fileURLToPath(new URL("../connector.json", import.meta.url));

export interface ConnectorSpec {
  name: string;
  config: Record<string, string>;
}

/**
 * The checked-in connector config with the database placeholders filled from DEBEZIUM_DATABASE_URL, except the
 * password: the config names `${env:DEBEZIUM_DB_PASSWORD}`, which the Connect worker resolves from its own
 * environment (EnvVarConfigProvider), so the REST API and Connect's config topic never hold it.
 */
export function connectorSpec(debeziumDatabaseUrl: string): ConnectorSpec {
  const url = new URL(debeziumDatabaseUrl);
  const values: Record<string, string> = {
    DB_HOST: url.hostname,
    DB_PORT: url.port || "5432",
    DB_USER: decodeURIComponent(url.username),
    DB_NAME: url.pathname.replace(/^\//, ""),
  };
  const spec = JSON.parse(readFileSync(CONFIG_FILE, "utf8")) as ConnectorSpec;
  for (const [key, value] of Object.entries(spec.config)) {
    spec.config[key] = value.replace(/\$\{(\w+)\}/g, (whole, name: string) => values[name] ?? whole);
  }
  return spec;
}

interface ConnectorStatus {
  connector: { state: string; trace?: string };
  tasks: { id: number; state: string; trace?: string }[];
}

/** Connect's REST user (CONNECT_USERNAME and CONNECT_PASSWORD of `.stack/env`). */
export interface ConnectAuth {
  username: string;
  password: string;
}

/** The REST user from an environment (default: the stack's), or undefined for a Connect without authentication. */
export function connectAuth(env: Record<string, string | undefined> = stackEnv()): ConnectAuth | undefined {
  const { CONNECT_USERNAME: username, CONNECT_PASSWORD: password } = env;
  return username && password ? { username, password } : undefined;
}

/** Headers of a request to Connect's REST API, with Basic auth when there is a REST user. */
export function connectHeaders(auth = connectAuth()): Record<string, string> {
  const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
  if (auth) {
    headers.authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`;
  }
  return headers;
}

async function connectFetch(
  connectUrl: string,
  path: string,
  init?: RequestInit,
  auth = connectAuth(),
): Promise<Response> {
  return fetch(`${connectUrl}${path}`, {
    ...init,
    headers: connectHeaders(auth),
    signal: AbortSignal.timeout(15_000),
  });
}

export async function connectorStatus(
  connectUrl: string,
  name: string,
  auth = connectAuth(),
): Promise<ConnectorStatus | undefined> {
  const res = await connectFetch(connectUrl, `/connectors/${name}/status`, undefined, auth);
  if (res.status === 404) return undefined;
  if (!res.ok) throw new Error(`connect status ${res.status}: ${await res.text()}`);
  return (await res.json()) as ConnectorStatus;
}

/**
 * Creates or updates the connector (PUT /connectors/<name>/config is both), skipping the call when the running
 * config already equals ours, then waits until the connector and its task are RUNNING. A FAILED state throws
 * with the connector's own error text.
 */
export async function registerConnector(
  connectUrl: string,
  spec: ConnectorSpec,
  options: { timeoutMs?: number; log?: (line: string) => void; auth?: ConnectAuth } = {},
): Promise<"created" | "updated" | "unchanged"> {
  const log = options.log ?? (() => {});
  const auth = options.auth ?? connectAuth();
  const current = await connectFetch(connectUrl, `/connectors/${spec.name}/config`, undefined, auth);
  let action: "created" | "updated" | "unchanged";
  if (current.ok) {
    const existing = (await current.json()) as Record<string, string>;
    const { name: _name, ...existingConfig } = existing;
    action = sameConfig(existingConfig, spec.config) ? "unchanged" : "updated";
  } else {
    action = "created";
  }
  if (action !== "unchanged") {
    const res = await connectFetch(
      connectUrl,
      `/connectors/${spec.name}/config`,
      { method: "PUT", body: JSON.stringify(spec.config) },
      auth,
    );
    if (!res.ok) {
      const body = await res.text();
      // Connect 4.3 answers an invalid config with a 500 about its own null pointer instead of the reason; the
      // validate endpoint returns the connector's own messages.
      const reasons = await validationErrors(connectUrl, spec, auth).catch(() => []);
      throw new Error(
        `connector ${spec.name} rejected (${res.status}): ${reasons.length > 0 ? reasons.join("; ") : body}`,
      );
    }
  }
  log(`connector ${spec.name}: ${action}`);
  let last = "";
  await poll(
    `connector ${spec.name} RUNNING`,
    async () => {
      const status = await connectorStatus(connectUrl, spec.name, auth);
      if (!status) return false;
      const failed = [status.connector, ...status.tasks].find((s) => s.state === "FAILED");
      if (failed)
        throw new NonRetriableError(`connector ${spec.name} FAILED:\n${failed.trace ?? "(no trace)"}`);
      last = `${status.connector.state}/${status.tasks.map((t) => t.state).join(",") || "no tasks"}`;
      return (
        status.connector.state === "RUNNING" &&
        status.tasks.length > 0 &&
        status.tasks.every((t) => t.state === "RUNNING")
      );
    },
    { timeoutMs: options.timeoutMs ?? 60_000, intervalMs: 500 },
  ).catch((error) => {
    if (error instanceof NonRetriableError) throw error;
    throw new Error(`connector ${spec.name} not RUNNING in time (last state ${last || "unknown"})`);
  });
  return action;
}

/** The connector plugin's own complaints about a config (`PUT /connector-plugins/<class>/config/validate`). */
export async function validationErrors(
  connectUrl: string,
  spec: ConnectorSpec,
  auth = connectAuth(),
): Promise<string[]> {
  const plugin = spec.config["connector.class"]!;
  const res = await connectFetch(
    connectUrl,
    `/connector-plugins/${plugin}/config/validate`,
    { method: "PUT", body: JSON.stringify({ ...spec.config, name: spec.name }) },
    auth,
  );
  if (!res.ok) return [];
  // Entries for settings the plugin does not define come without a value.
  const body = (await res.json()) as { configs: { value?: { name: string; errors?: string[] } | null }[] };
  return body.configs.flatMap((c) => (c.value?.errors ?? []).map((error) => `${c.value!.name}: ${error}`));
}

function sameConfig(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) if (a[key] !== b[key]) return false;
  return true;
}

export interface SlotHealth {
  slot_name: string;
  active: boolean;
  /** reserved | extended | unreserved | lost: how close the slot is to losing WAL (max_slot_wal_keep_size). */
  wal_status: string | null;
  /** WAL written since the slot's confirmed position: changes not yet confirmed as delivered. */
  lag_bytes: number | null;
  /** WAL the slot keeps on disk (from restart_lsn). */
  retained_bytes: number | null;
  confirmed_flush_lsn: string | null;
}

/** Replication slot health (SPEC 8): bytes of WAL the slot still holds back, and `wal_status`. */
export async function slotHealth(db: string | pg.Pool, slot = "crm_outbox"): Promise<SlotHealth | undefined> {
  const client = typeof db === "string" ? new pg.Client({ connectionString: db }) : db;
  if (client instanceof pg.Client) await client.connect();
  try {
    const { rows } = await client.query<SlotHealth>(
      `SELECT slot_name, active, wal_status, confirmed_flush_lsn::text,
              pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes,
              pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
       FROM pg_replication_slots WHERE slot_name = $1`,
      [slot],
    );
    const row = rows[0];
    const bytes = (value: number | string | null) => (value === null ? null : Number(value));
    return row
      ? { ...row, lag_bytes: bytes(row.lag_bytes), retained_bytes: bytes(row.retained_bytes) }
      : undefined;
  } finally {
    if (client instanceof pg.Client) await client.end();
  }
}

/** Removes a connector (404 is fine). Its replication slot stays: drop it with `dropSlot` when retiring it. */
export async function deleteConnector(connectUrl: string, name: string): Promise<void> {
  const res = await connectFetch(connectUrl, `/connectors/${name}`, { method: "DELETE" });
  if (!res.ok && res.status !== 404) throw new Error(`connect delete ${res.status}: ${await res.text()}`);
}

/** Drops a replication slot once nothing streams from it, so it stops holding WAL. */
export async function dropSlot(db: pg.Pool, slot: string, timeoutMs = 30_000): Promise<void> {
  await poll(
    `slot ${slot} inactive, then dropped`,
    async () => {
      const { rows } = await db.query<{ active: boolean }>(
        "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
        [slot],
      );
      if (rows[0]?.active) return false;
      if (rows[0]) {
        await db.query("SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1", [
          slot,
        ]);
      }
      return true;
    },
    { timeoutMs, intervalMs: 500 },
  );
}

/**
 * Retires a connector for good: deletes it, waits until Connect no longer knows it, then drops its slot. A task
 * that was restarting can still re-create the slot after a first drop, so the slot must stay gone for a while.
 */
export async function retireConnector(
  connectUrl: string,
  db: pg.Pool,
  name: string,
  slot: string,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await deleteConnector(connectUrl, name);
  await poll(
    `connector ${name} gone from Connect`,
    async () => (await connectorStatus(connectUrl, name).catch(() => undefined)) === undefined,
    { timeoutMs, intervalMs: 500 },
  );
  let quietChecks = 0;
  await poll(
    `slot ${slot} gone for three checks in a row`,
    async () => {
      const { rows } = await db.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [slot]);
      if (rows.length === 0) return ++quietChecks >= 3;
      quietChecks = 0;
      await dropSlot(db, slot, Math.max(1_000, deadline - Date.now()));
      return false;
    },
    { timeoutMs: Math.max(1_000, deadline - Date.now()) + 5_000, intervalMs: 1_000 },
  );
}
