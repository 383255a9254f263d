import { createServer } from "node:http";
import { parseEnv } from "@crm/config";
import { createPool } from "@crm/db";
import { createLogger } from "@crm/logger";
import { connectorSpec, registerConnector } from "./connector.ts";
import { ConnectorEnv } from "./env.ts";
import { createOutboxMetrics } from "./metrics.ts";
import { readOutboxHealth } from "./monitor.ts";
import { pruneOutbox } from "./prune.ts";

const USAGE = `usage: npm run connector -- <command>
  register   create or update the Debezium connector, wait until RUNNING (fails with the connector's error)
  status     connector state, slot lag in bytes, wal_status; exit 3 when the lag alert fires
  prune      delete outbox rows the slot has confirmed and that are older than OUTBOX_RETENTION_HOURS
  monitor    keep running: GET /metrics (slot lag, alert, wal_status) on OUTBOX_MONITOR_PORT, prune periodically`;

async function main(): Promise<number> {
  const env = parseEnv(ConnectorEnv);
  const command = process.argv[2] ?? "status";
  const spec = connectorSpec(env.DEBEZIUM_DATABASE_URL);
  const slot = spec.config["slot.name"]!;
  const healthDeps = {
    connectUrl: env.CONNECT_URL,
    connectorName: spec.name,
    slot,
    thresholdBytes: env.SLOT_LAG_ALERT_BYTES,
  };
  const retentionMs = env.OUTBOX_RETENTION_HOURS * 3_600_000;

  switch (command) {
    case "register": {
      await registerConnector(env.CONNECT_URL, spec, { log: (line) => console.log(`[connector] ${line}`) });
      console.log(`[connector] ${spec.name} RUNNING`);
      return 0;
    }
    case "status": {
      const health = await readOutboxHealth({ ...healthDeps, db: env.DATABASE_ADMIN_URL });
      console.log(JSON.stringify({ ...health, slot: health.slot ?? "no slot yet" }, null, 2));
      return health.lagAlert ? 3 : 0;
    }
    case "prune": {
      const pool = createPool({
        connectionString: env.DATABASE_ADMIN_URL,
        applicationName: "outbox-prune",
        max: 2,
      });
      try {
        const result = await pruneOutbox(pool, { slots: [slot], retentionMs });
        console.log(JSON.stringify(result));
      } finally {
        await pool.end();
      }
      return 0;
    }
    case "monitor":
      await monitor(env, { ...healthDeps, retentionMs });
      return 0;
    default:
      console.error(USAGE);
      return 2;
  }
}

async function monitor(
  env: ConnectorEnv,
  deps: {
    connectUrl: string;
    connectorName: string;
    slot: string;
    thresholdBytes: number;
    retentionMs: number;
  },
): Promise<void> {
  const logger = createLogger("outbox-connector");
  const pool = createPool({
    connectionString: env.DATABASE_ADMIN_URL,
    applicationName: "outbox-monitor",
    max: 3,
  });
  const metrics = createOutboxMetrics();
  let lastAlert = false;

  const check = async () => {
    try {
      const health = await readOutboxHealth({ ...deps, db: pool, metrics });
      if (health.lagAlert !== lastAlert) {
        logger[health.lagAlert ? "warn" : "info"](
          {
            slot: deps.slot,
            lag_bytes: health.slot?.lag_bytes ?? null,
            wal_status: health.slot?.wal_status ?? null,
          },
          health.lagAlert ? "outbox_slot_lag_alert" : "outbox_slot_lag_ok",
        );
        lastAlert = health.lagAlert;
      }
    } catch (error) {
      logger.warn({ err: error }, "outbox health check failed");
    }
  };
  const prune = async () => {
    try {
      const result = await pruneOutbox(pool, { slots: [deps.slot], retentionMs: deps.retentionMs });
      metrics.pruned.inc(result.deleted);
      if (result.deleted > 0) logger.info({ ...result }, "outbox_pruned");
    } catch (error) {
      logger.warn({ err: error }, "outbox prune failed");
    }
  };

  await check();
  const timers = [setInterval(check, env.OUTBOX_MONITOR_INTERVAL_MS)];
  if (env.OUTBOX_PRUNE_INTERVAL_MS > 0) timers.push(setInterval(prune, env.OUTBOX_PRUNE_INTERVAL_MS));

  const server = createServer(async (req, res) => {
    if (req.url === "/metrics") {
      res.setHeader("content-type", metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    } else if (req.url === "/healthz") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ ok: true }));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  server.listen(env.OUTBOX_MONITOR_PORT, "127.0.0.1", () =>
    logger.info({ port: env.OUTBOX_MONITOR_PORT, slot: deps.slot }, "outbox monitor listening"),
  );

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  for (const timer of timers) clearInterval(timer);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await pool.end();
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`[connector] ${(error as Error).message}`);
    process.exit(1);
  },
);
