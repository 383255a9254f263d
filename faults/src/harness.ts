import { join } from "node:path";
import type { StackSettings } from "@crm/infra/stack";
import { ServiceProcess } from "@crm/process";
import type pg from "pg";
import { DeliveryProbe } from "./check.ts";
import { CONFIG, say } from "./config.ts";
import type { FaultContext } from "./faults.ts";
import { type LoadBusiness, LoadDriver } from "./load.ts";
import type { Recovery } from "./report.ts";

/**
 * What the phases of one run share: the private stack, the services as child processes (one ingest-api, two
 * resolver-workers in one group), the load and its ledger, the delivery probe, and what the phases found.
 */
export class Harness {
  /** The phase each request is booked under: "baseline", then each fault's name, then "drain". */
  phase = "baseline";
  /** Event ids known to have their crm_events row (checked once, never again). */
  readonly applied = new Set<string>();
  readonly recoveries = new Map<string, Recovery>();
  readonly notes = new Map<string, string[]>();
  /** Broken invariants; any makes the run fail. */
  readonly failures: string[] = [];
  readonly brokers: string[];
  readonly businessIds: string[];
  readonly api: ServiceProcess;
  readonly workers: ServiceProcess[];
  readonly services: ServiceProcess[];
  readonly probe: DeliveryProbe;
  readonly load: LoadDriver;

  constructor(
    readonly s: StackSettings,
    readonly tools: FaultContext["tools"],
    /** The private stack's endpoints. */
    readonly env: Record<string, string>,
    /** Admin connection: RLS does not hide rows from the checker. */
    readonly admin: pg.Pool,
    readonly runId: string,
    readonly businesses: LoadBusiness[],
  ) {
    this.brokers = env.KAFKA_BROKERS!.split(",");
    this.businessIds = businesses.map((b) => b.businessId);
    const serviceEnv = { ...env, LOG_LEVEL: "info" };
    // Supervised, as systemd or Kubernetes would: a service that exits on its own is started again after a second.
    this.api = new ServiceProcess({
      name: "ingest-api",
      entry: "services/ingest-api/src/main.ts",
      env: { ...serviceEnv, INGEST_PORT: String(s.ingestPort), SEGMENT_PORT: "0" },
      healthUrl: `http://127.0.0.1:${s.ingestPort}/healthz`,
      output: { file: join(s.logs, "ingest-api.log") },
      restartOnCrash: true,
    });
    this.workers = [1, 2].map(
      (n) =>
        new ServiceProcess({
          name: `resolver-worker-${n}`,
          entry: "services/resolver-worker/src/main.ts",
          env: {
            ...serviceEnv,
            WORKER_PORT: String(s.workerPort + n - 1),
            WORKER_GROUP_ID: "resolver-worker",
            WORKER_SESSION_TIMEOUT_MS: String(CONFIG.sessionTimeoutMs),
          },
          healthUrl: `http://127.0.0.1:${s.workerPort + n - 1}/healthz`,
          output: { file: join(s.logs, `resolver-worker-${n}.log`) },
          restartOnCrash: true,
        }),
    );
    this.services = [this.api, ...this.workers];
    this.probe = new DeliveryProbe(this.brokers, new Set(this.businessIds));
    this.load = new LoadDriver(
      {
        url: `http://127.0.0.1:${s.ingestPort}`,
        businesses,
        ratePerSec: CONFIG.rate,
        keyedShare: 0.5,
        people: CONFIG.people,
        run: runId,
        retryForMs: 120_000,
        maxInFlight: 400,
        requestTimeoutMs: 15_000,
      },
      () => this.phase,
    );
  }

  /** A line of the report under the fault `name`, printed as it happens too. */
  note(name: string, line: string): void {
    this.notes.set(name, [...(this.notes.get(name) ?? []), line]);
    say(`  ${line}`);
  }

  /** What a fault may break and repair. */
  faultContext(): FaultContext {
    return {
      s: this.s,
      tools: this.tools,
      api: this.api,
      workers: this.workers,
      load: this.load,
      workerSessionTimeoutMs: CONFIG.sessionTimeoutMs,
      log: (line) => say(`stack: ${line}`),
    };
  }

  /** Stops the load, the probe and the services; ends the admin pool. Safe after any phase failed. */
  async close(): Promise<void> {
    await this.load.stop().catch(() => {});
    await this.probe.stop();
    await Promise.all(this.services.map((service) => service.stop()));
    await this.admin.end().catch(() => {});
  }
}
