import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { stackDir, stackEnv } from "@crm/config";
import { TOPICS } from "@crm/kafka";
import pg from "pg";
import { BenchTopics } from "./bench-topics.ts";
import { BENCH_PLAN, BENCH_PLAN_LIMIT, type BenchConfig, say } from "./config.ts";
import { ContactUpdates } from "./contact-updates.ts";
import { LoadGenerators } from "./load-generators.ts";
import { PhaseRecorder } from "./phase-recorder.ts";
import type { BenchResults } from "./report.ts";
import { type BenchService, startBenchService, stopAllServices } from "./services.ts";
import { type BenchTenants, createBenchTenants } from "./tenants.ts";

/** One scenario or limit of the bench: its own file under scenarios/, run by main in SCENARIOS order. */
export interface Scenario {
  /** Its key in the results' `errors` when it fails ("scenario 1", "limit: pgbench"). */
  name: string;
  /** The BENCH_ONLY numbers that select it. */
  selectedBy: number[];
  /** It reads contact.updated.v1: the run's consumer is up while such scenarios run, and stopped before others. */
  readsContactUpdates?: boolean;
  run(bench: BenchRun): Promise<void>;
}

/**
 * What the scenarios share in one run: the shared stack's endpoints, the run's businesses, topics and consumer
 * groups, the services it starts on private ports, the phase recorder and load generators, and the results.
 */
export class BenchRun {
  readonly results: BenchResults = {};
  readonly limits: NonNullable<BenchResults["limits"]> = {};
  readonly errors: Record<string, string> = {};
  /** Mean value size the API produced in this run (the Kafka limit's record size), once measured. */
  recordSize: number | undefined;
  readonly env = stackEnv();
  readonly apiUrl: string;
  readonly logDir = join(stackDir(), "logs");
  readonly profileDir: string;
  readonly phases: PhaseRecorder;
  readonly load: LoadGenerators;
  private updates: ContactUpdates | undefined;
  private apisStarted = 0;
  private closed: Promise<void> | undefined;

  private constructor(
    readonly cfg: BenchConfig,
    readonly runId: string,
    readonly admin: pg.Pool,
    readonly kafka: BenchTopics,
    readonly tenants: BenchTenants,
  ) {
    this.apiUrl = `http://127.0.0.1:${cfg.apiPort}`;
    this.profileDir = join(this.logDir, `bench-${runId}-profiles`);
    mkdirSync(this.profileDir, { recursive: true });
    this.phases = new PhaseRecorder(admin, () => kafka.endOffset(kafka.raw));
    this.load = new LoadGenerators({
      cfg,
      apiUrl: this.apiUrl,
      workDir: this.logDir,
      runId,
      onSpawn: this.phases.onLoadSpawn,
    });
  }

  /** On a prepared stack: the run's topics, then its businesses. */
  static async open(cfg: BenchConfig, runId: string): Promise<BenchRun> {
    const env = stackEnv();
    const admin = new pg.Pool({
      connectionString: env.DATABASE_ADMIN_URL,
      max: 3,
      application_name: "bench",
    });
    const kafka = await BenchTopics.create(env.KAFKA_BROKERS!.split(","), runId);
    try {
      return new BenchRun(cfg, runId, admin, kafka, await createBenchTenants(admin, runId, cfg.tenants));
    } catch (error) {
      await kafka.remove().catch(() => {});
      await admin.end();
      throw error;
    }
  }

  /** Runs one scenario; a failing one is reported and the run goes on with the next. */
  async run(scenario: Scenario): Promise<void> {
    if (!scenario.readsContactUpdates) await this.stopContactUpdates();
    try {
      await scenario.run(this);
    } catch (error) {
      this.errors[scenario.name] = (error as Error).message;
      say(`${scenario.name} failed: ${(error as Error).message}`);
    }
  }

  /** The bench's own ingest-api: its rate-limit group and plan limit, sending to the run's raw topic. */
  startApi(name: string): Promise<BenchService> {
    this.apisStarted++;
    return startBenchService({
      name,
      entry: "services/ingest-api/src/main.ts",
      env: {
        DATABASE_URL: withApplicationName(this.env.DATABASE_URL!, "bench-ingest-api"),
        INGEST_PORT: String(this.cfg.apiPort),
        SEGMENT_PORT: "0",
        // Its own instance group, so the rate-limit share is 1/1 whatever else runs on the shared stack.
        INGEST_INSTANCE_GROUP: `bench-${this.runId}`,
        RATE_LIMIT_PLANS: JSON.stringify({ [BENCH_PLAN]: BENCH_PLAN_LIMIT }),
        INGEST_TOPIC: this.kafka.raw,
      },
      healthUrl: `${this.apiUrl}/readyz`,
      logFile: join(this.logDir, `bench-${this.runId}-api.log`),
      profileDir: this.cfg.profile ? this.profileDir : undefined,
    });
  }

  /** The bench's own resolver-worker, in a fresh group at the end of the run's raw topic. */
  async startWorker(name: string): Promise<{ worker: BenchService; groupId: string }> {
    // A fresh group at the topic's end: it applies what this scenario sends, not what earlier ones left.
    const groupId = await this.kafka.groupAtEnd(this.kafka.raw, "bench-worker");
    const worker = await startBenchService({
      name,
      entry: "services/resolver-worker/src/main.ts",
      env: {
        DATABASE_URL: withApplicationName(this.env.DATABASE_URL!, "bench-resolver-worker"),
        WORKER_PORT: String(this.cfg.workerPort),
        WORKER_GROUP_ID: groupId,
        WORKER_TOPIC: this.kafka.raw,
        WORKER_DLQ_TOPIC: this.kafka.dlq,
      },
      // Ready once the consumer holds its assignment, so the warm-up is not spent joining the group.
      healthUrl: `http://127.0.0.1:${this.cfg.workerPort}/readyz`,
      logFile: join(this.logDir, `bench-${this.runId}-worker.log`),
      profileDir: this.cfg.profile ? this.profileDir : undefined,
    });
    return { worker, groupId };
  }

  /** The run's consumer of contact.updated.v1 (from its end, the run's businesses only), started on first use. */
  async contactUpdates(): Promise<ContactUpdates> {
    if (!this.updates) {
      const groupId = await this.kafka.groupAtEnd(TOPICS.contactUpdated, "bench-e2e");
      const updates = new ContactUpdates(this.kafka.kafka, groupId, this.tenants.all, this.admin);
      await updates.start();
      this.updates = updates;
    }
    return this.updates;
  }

  private async stopContactUpdates(): Promise<void> {
    const updates = this.updates;
    this.updates = undefined;
    await updates?.stop();
  }

  /**
   * The API's events must have gone to the run's raw topic (INGEST_TOPIC): an API that ignored the setting would
   * leave them on the shared events.raw.v1, so the run says so.
   */
  private async checkRedirected(): Promise<void> {
    if (this.apisStarted === 0 || Object.keys(this.phases.phases).length === 0) return;
    const received = await this.kafka.endOffset(this.kafka.raw);
    if (received === 0 && Object.keys(this.results).length > 0)
      say(`WARNING: ${this.kafka.raw} received nothing; the API's events may have gone to ${TOPICS.raw}`);
  }

  /** Stops what the run started and removes its topics and groups; the dev stack is left as it was. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      await stopAllServices();
      await this.stopContactUpdates().catch(() => {});
      await this.checkRedirected().catch(() => {});
      const left = await this.kafka.remove().catch((error: Error) => [`everything (${error.message})`]);
      if (left.length > 0) say(`could not remove from Kafka: ${left.join(", ")}`);
      else say(`removed the run's topics (${this.kafka.raw}, ${this.kafka.dlq}) and consumer groups`);
      await this.admin.end();
    })();
    return this.closed;
  }
}

/**
 * The services' database URL with an application_name of the bench's own (pg lets the URL's parameters win over
 * the pool's option), so pg_stat_activity tells the bench's backends from other services on the shared stack.
 */
function withApplicationName(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set("application_name", name);
  return parsed.toString();
}
