import { spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import type { StackSettings } from "@crm/infra/stack";
import { TOPICS } from "@crm/kafka";
import pg from "pg";
import {
  appliedAmong,
  applyOrder,
  consumerLag,
  DeliveryProbe,
  dlqSize,
  readLiveState,
  replay,
  slotLagBytes,
  startApplyOrderLog,
  until,
} from "./check.ts";
import {
  compareDeliveries,
  comparePartitions,
  identityPartition,
  ledgerFindings,
  lostAcks,
} from "./compare.ts";
import { FAULTS, type FaultContext } from "./faults.ts";
import { is2xx, isAck } from "./ledger.ts";
import { type LoadBusiness, LoadDriver } from "./load.ts";
import { markdownTable, type PhaseReport, type Recovery, totalRow } from "./report.ts";
import { ServiceProcess } from "./services.ts";

/*
 * `npm run test:faults`: a private three-broker stack in .stack-faults, the real services as child processes
 * (one ingest-api, two resolver-workers in one group), a steady keyed + unkeyed load across several businesses,
 * one fault at a time with recovery, then a ledger check and a per-fault report. Exit 1 if an invariant fails.
 */

const root = repoRoot();
const started = Date.now();
const say = (line: string) =>
  console.log(`[faults ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${line}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const CONFIG = {
  rate: num("FAULTS_RATE", 150),
  businesses: num("FAULTS_BUSINESSES", 5),
  people: num("FAULTS_PEOPLE", 300),
  baselineMs: num("FAULTS_BASELINE_MS", 10_000),
  settleMs: num("FAULTS_SETTLE_MS", 3_000),
  sessionTimeoutMs: num("FAULTS_WORKER_SESSION_TIMEOUT_MS", 10_000),
  recoveryTimeoutMs: num("FAULTS_RECOVERY_TIMEOUT_MS", 60_000),
  keepStack: process.env.FAULTS_KEEP_STACK === "1",
};

/**
 * The private stack: its own dir and ports, the main stack's jars. Nothing here touches the shared stack. Ports are
 * FAULTS_PORT_BASE (26000) + the usual suffixes: below the kernel's ephemeral range, and away from the private
 * brokers and Connect workers of the integration tests (29092, 28083, 19192...), which may run at the same time.
 */
const portBase = num("FAULTS_PORT_BASE", 26_000);
const PRIVATE_ENV: Record<string, string> = {
  STACK_DIR: join(root, ".stack-faults"),
  STACK_LIB_DIR: process.env.STACK_LIB_DIR ?? join(root, ".stack", "lib"),
  STACK_KAFKA_NODES: "3",
  STACK_PG_PORT: String(portBase + 432),
  STACK_KAFKA_PORT: String(portBase + 92),
  STACK_KAFKA_CONTROLLER_PORT: String(portBase + 93),
  STACK_CONNECT_PORT: String(portBase + 83),
  STACK_REGISTRY_PORT: String(portBase + 81),
  STACK_REGISTRY_MANAGEMENT_PORT: String(portBase + 181),
  STACK_INGEST_PORT: String(portBase + 80),
  STACK_WORKER_PORT: String(portBase + 191),
  STACK_PARTITIONS: "6",
};

function npm(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("npm", ["run", "--silent", ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.once("exit", (code) =>
      code === 0
        ? resolve(output)
        : reject(new Error(`npm run ${args.join(" ")} failed (${code}):\n${output}`)),
    );
  });
}

async function main(): Promise<number> {
  // The launcher reads STACK_DIR and the knobs from the process environment.
  Object.assign(process.env, PRIVATE_ENV);
  const stack = await import("@crm/infra/stack");
  const s = stack.stackSettings(process.env);
  const tools = stack.ensureToolchain(say);
  if (!CONFIG.keepStack) {
    // A clean start: stop whatever a crashed earlier run left behind, and wipe its data (never the shared stack).
    await stack.stackDown(s, () => {});
    rmSync(s.dir, { recursive: true, force: true });
  }
  say(
    `private stack in ${s.dir} (PG ${s.pgPort}, Kafka ${stack.kafkaBrokers(s).join(",")}, Connect ${s.connectPort})`,
  );
  try {
    return await exercise(stack, s, tools);
  } finally {
    if (CONFIG.keepStack) {
      say(`private stack kept (FAULTS_KEEP_STACK=1): STACK_DIR=${s.dir}`);
    } else {
      // Data and logs stay in .stack-faults for inspection until the next run wipes them.
      await stack.stackDown(s, (line) => say(`stack: ${line}`));
    }
  }
}

type Stack = typeof import("@crm/infra/stack");

/** Everything on the private stack: bring it up, seed, start the services, load + faults, check, report. */
async function exercise(stack: Stack, s: StackSettings, tools: FaultContext["tools"]): Promise<number> {
  const env = await stack.stackUp(s, (line) => say(`stack: ${line}`));
  // The private endpoints win over anything exported for the shared stack.
  Object.assign(process.env, env);
  const brokers = env.KAFKA_BROKERS!.split(",");
  await npm(["migrate"], env);
  await npm(["schemas", "--", "register"], env);
  await npm(["connector", "--", "register"], env);
  say("migrated, schemas and connector registered");

  const admin = new pg.Pool({ connectionString: env.DATABASE_ADMIN_URL, max: 4 });
  // Postgres is crashed on purpose: idle clients then emit errors, which must not end the harness.
  admin.on("error", () => {});

  const run = Date.now().toString(36);
  const businesses: LoadBusiness[] = [];
  for (let i = 0; i < CONFIG.businesses; i++) {
    const { rows } = await admin.query<{ id: string }>(
      "INSERT INTO businesses (name, owner_id, default_country) VALUES ($1, gen_random_uuid(), 'US') RETURNING id",
      [`faults ${run} ${i}`],
    );
    businesses.push({ businessId: rows[0]!.id, ingestKey: "" });
  }
  await Promise.all(
    businesses.map(async (b) => {
      const out = await npm(["ingest-keys", "--", "create", b.businessId, "faults"], env);
      b.ingestKey = /(ik_[A-Za-z0-9_-]+)/.exec(out)?.[1] ?? "";
      if (!b.ingestKey) throw new Error("ingest-keys printed no key");
    }),
  );
  const businessIds = businesses.map((b) => b.businessId);

  const serviceEnv = { ...env, LOG_LEVEL: "info" };
  const api = new ServiceProcess("ingest-api", {
    root,
    entry: "services/ingest-api/src/main.ts",
    env: { ...serviceEnv, INGEST_PORT: String(s.ingestPort) },
    healthUrl: `http://127.0.0.1:${s.ingestPort}/healthz`,
    logsDir: s.logs,
  });
  const workers = [1, 2].map(
    (n) =>
      new ServiceProcess(`resolver-worker-${n}`, {
        root,
        entry: "services/resolver-worker/src/main.ts",
        env: {
          ...serviceEnv,
          WORKER_PORT: String(s.workerPort + n - 1),
          WORKER_GROUP_ID: "resolver-worker",
          WORKER_SESSION_TIMEOUT_MS: String(CONFIG.sessionTimeoutMs),
        },
        healthUrl: `http://127.0.0.1:${s.workerPort + n - 1}/healthz`,
        logsDir: s.logs,
      }),
  );
  const services = [api, ...workers];
  const probe = new DeliveryProbe(brokers, new Set(businessIds));
  let load: LoadDriver | undefined;
  try {
    await Promise.all(services.map((service) => service.start()));
    await startApplyOrderLog(admin);
    await probe.start();
    say(`services up; load ${CONFIG.rate} req/s over ${CONFIG.businesses} businesses (run ${run})`);

    let phase = "baseline";
    load = new LoadDriver(
      {
        url: `http://127.0.0.1:${s.ingestPort}`,
        businesses,
        ratePerSec: CONFIG.rate,
        keyedShare: 0.5,
        people: CONFIG.people,
        run,
        retryForMs: 120_000,
        maxInFlight: 400,
        requestTimeoutMs: 15_000,
      },
      () => phase,
    );
    load.start();
    await sleep(CONFIG.baselineMs);

    const applied = new Set<string>();
    const recoveries = new Map<string, Recovery>();
    const notes = new Map<string, string[]>();
    const note = (name: string, line: string) => {
      notes.set(name, [...(notes.get(name) ?? []), line]);
      say(`  ${line}`);
    };
    const ctx: FaultContext = {
      s,
      tools,
      api,
      workers,
      load,
      workerSessionTimeoutMs: CONFIG.sessionTimeoutMs,
      log: (line) => say(`stack: ${line}`),
    };
    const only = process.env.FAULTS_ONLY?.split(",");
    for (const fault of FAULTS.filter((f) => !only || only.some((o) => f.name.includes(o)))) {
      phase = fault.name;
      say(`fault: ${fault.name}`);
      const injectedAt = Date.now();
      const what = await fault.inject(ctx);
      if (what) note(fault.name, what);
      await sleep(fault.holdMs(ctx));
      const clearingAt = Date.now();
      await fault.clear(ctx);
      const clearedAt = Date.now();
      say(`  cleared after ${((clearedAt - injectedAt) / 1000).toFixed(1)} s`);
      if (fault.apiMustRefuse) {
        // Requests sent once the fault had hold (1 s in) and answered before repair began.
        const accepted = load.ledger.flatMap((e) =>
          e.attempts.filter(
            (a) => a.status === 202 && a.at >= injectedAt + 1_000 && a.at + a.ms < clearingAt,
          ),
        );
        note(fault.name, `202 answers while it could not persist: ${accepted.length} (must be 0)`);
        if (accepted.length > 0)
          failures.push(`${fault.name}: ${accepted.length} requests got 202 during the outage`);
      }

      const firstAck = await until(
        () => load!.ledger.some((e) => e.attempts.some((a) => a.at >= clearedAt && is2xx(a))),
        CONFIG.recoveryTimeoutMs,
        100,
      );
      const firstAckAt = firstAck
        ? Math.min(
            ...load.ledger.flatMap((e) =>
              e.attempts.filter((a) => a.at >= clearedAt && is2xx(a)).map((a) => a.at + a.ms),
            ),
          )
        : undefined;
      const pending = load.ledger
        .filter((e) => isAck(e) && e.ackAt <= clearedAt && !applied.has(e.eventId!))
        .map((e) => e.eventId!);
      const appliedAt = await until(
        async () => {
          const found = await appliedAmong(
            admin,
            pending.filter((id) => !applied.has(id)),
          );
          for (const id of found) applied.add(id);
          return pending.every((id) => applied.has(id));
        },
        CONFIG.recoveryTimeoutMs,
        250,
      );
      if (appliedAt === undefined) {
        const left = pending.filter((id) => !applied.has(id)).length;
        note(
          fault.name,
          `${left} of ${pending.length} events acknowledged before the repair still unapplied after ${CONFIG.recoveryTimeoutMs / 1000} s (the drain checks them again)`,
        );
      }
      let streamedAt: number | undefined;
      if (appliedAt) {
        const { rows } = await admin.query<{ id: string }>(
          "SELECT id FROM outbox WHERE business_id = ANY ($1::uuid[]) AND created_at > to_timestamp($2 / 1000.0)",
          [businessIds, injectedAt - 30_000],
        );
        streamedAt = await until(() => rows.every((r) => probe.has(r.id)), CONFIG.recoveryTimeoutMs, 250);
      }
      const recovery: Recovery = {
        faultMs: clearedAt - injectedAt,
        firstAckMs: firstAckAt === undefined ? undefined : Math.max(0, firstAckAt - clearedAt),
        appliedMs: appliedAt === undefined ? undefined : appliedAt - clearedAt,
        streamedMs: streamedAt === undefined ? undefined : streamedAt - clearedAt,
      };
      recoveries.set(fault.name, recovery);
      say(
        `  recovered: first 2xx +${recovery.firstAckMs ?? "timeout"} ms, applied +${recovery.appliedMs ?? "timeout"} ms, streamed +${recovery.streamedMs ?? "timeout"} ms`,
      );
      for (const service of services) {
        if (!service.running) {
          note(
            fault.name,
            `${service.name} had exited on its own; restarted by the harness (a supervisor's job)`,
          );
          await service.start();
        }
      }
      await sleep(CONFIG.settleMs);
    }

    phase = "drain";
    say("stopping the load; keyed retries finish");
    await load.stop();
    const acked = load.ledger.filter(isAck);
    say(`draining: ${acked.length} acknowledged events`);
    const drained = await until(
      async () => {
        const found = await appliedAmong(
          admin,
          acked.map((e) => e.eventId).filter((id) => !applied.has(id)),
        );
        for (const id of found) applied.add(id);
        return acked.every((e) => applied.has(e.eventId));
      },
      120_000,
      500,
    );
    if (!drained) failures.push("not every acknowledged event was applied within 120 s of the load stopping");
    // Committed-offset lag is reported, not enforced: kafkajs keeps committing to a group coordinator that moved
    // (tulios/kafkajs#1779), so a worker can apply everything while its commits fail until the next rebalance.
    let committedLag: number | undefined;
    await until(
      async () => {
        committedLag = await consumerLag(brokers, "resolver-worker", TOPICS.raw);
        return committedLag === 0;
      },
      30_000,
      500,
    );
    const live = await readLiveState(admin, run, businessIds);
    const streamed = await until(() => live.outbox.every((o) => probe.has(o.id)), 60_000, 500);
    if (!streamed) failures.push("outbox rows not all on contact.updated.v1 within 60 s");
    const slotLag = await slotLagBytes(admin);
    say(`drained in ${((Date.now() - started) / 1000).toFixed(0)} s; checking the ledger`);

    // ---- the ledger check ----
    const counts = ledgerFindings(load.ledger, live.applied);
    const deliveries = compareDeliveries(
      live.outbox.map((o) => o.id),
      probe.deliveries.map((d) => d.id),
    );
    const phaseOfReq = new Map(load.ledger.map((e) => [e.req, e.phase]));
    const dupByPhase = new Map<string, number>();
    for (const o of live.outbox) {
      const extra = deliveries.duplicates.get(o.id);
      if (!extra) continue;
      const name = (o.causeReq !== undefined && phaseOfReq.get(o.causeReq)) || "unknown";
      dupByPhase.set(name, (dupByPhase.get(name) ?? 0) + extra);
    }
    const phases: PhaseReport[] = counts.map((c) => ({
      ...c,
      notStarted: load!.skippedByPhase.get(c.phase) ?? 0,
      duplicateMessages: dupByPhase.get(c.phase) ?? 0,
      recovery: recoveries.get(c.phase),
      notes: notes.get(c.phase) ?? [],
    }));
    const total = totalRow(phases);

    const runEvents = new Set(live.applied.map((e) => e.eventId));
    const order = (await applyOrder(admin)).filter((id) => runEvents.has(id));
    if (order.length !== runEvents.size || new Set(order).size !== order.length) {
      failures.push(`commit log has ${order.length} event inserts for ${runEvents.size} event rows`);
    }
    await admin.query("DROP DATABASE IF EXISTS crm_replay WITH (FORCE)");
    await admin.query("CREATE DATABASE crm_replay");
    const replayUrl = env.DATABASE_ADMIN_URL!.replace(/\/crm(\?|$)/, "/crm_replay$1");
    await npm(["migrate"], { ...env, DATABASE_ADMIN_URL: replayUrl });
    say(`replaying ${order.length} events one by one in commit order on a fresh database`);
    const replayed = await replay(admin, replayUrl, order, businessIds);
    const partitionDiff = comparePartitions(
      identityPartition(live.identities),
      identityPartition(replayed.identities),
    );
    const dlq = await dlqSize(brokers);

    const lost = lostAcks(load.ledger, live.applied);
    const keyedGaveUp = load.ledger.filter((e) => e.key && e.outcome === "failed").length;
    const invariants: [string, boolean, string][] = [
      [
        "acknowledged-but-lost = 0",
        total.ackLost === 0,
        `${total.ackLost}${
          lost.length
            ? ` (e.g. req ${lost
                .slice(0, 5)
                .map((e) => e.req)
                .join(", ")})`
            : ""
        }`,
      ],
      ["duplicate effects = 0", total.duplicateEffects === 0, String(total.duplicateEffects)],
      ["identities unique", live.duplicateIdentities === 0, `${live.duplicateIdentities} duplicated`],
      [
        "no contact with two external_ids",
        live.contactsWithTwoExternalIds === 0,
        `${live.contactsWithTwoExternalIds} contacts`,
      ],
      [
        "every outbox row on contact.updated.v1",
        deliveries.missing.length === 0,
        `${deliveries.missing.length} missing of ${live.outbox.length}`,
      ],
      [
        "no message without an outbox row",
        deliveries.unknown.length === 0,
        `${deliveries.unknown.length} unknown`,
      ],
      [
        "resolution = serial replay in commit order",
        partitionDiff.onlyLive.length === 0 && partitionDiff.onlyReplay.length === 0,
        `${identityPartition(live.identities).size} businesses, ${partitionDiff.onlyLive.length} groups only live, ${partitionDiff.onlyReplay.length} only in replay${partitionDiff.onlyLive.length ? `; e.g. ${partitionDiff.onlyLive.slice(0, 2).join(" / ")} vs ${partitionDiff.onlyReplay.slice(0, 2).join(" / ")}` : ""}`,
      ],
      ["nothing dead-lettered", dlq === 0, `${dlq ?? "unreadable"} on ${TOPICS.dlq}`],
    ];
    for (const [name, ok, detail] of invariants) if (!ok) failures.push(`${name}: ${detail}`);

    const elapsedMs = Date.now() - started;
    const stats = load.stats();
    const baseline = phases.find((p) => p.phase === "baseline");
    const table = markdownTable([...phases, total]);
    console.log(`\n## Fault injection report (run ${run})\n`);
    console.log(table);
    console.log("");
    for (const p of phases) for (const line of p.notes) console.log(`- ${p.phase}: ${line}`);
    for (const [name, ok, detail] of invariants) console.log(`- [${ok ? "x" : " "}] ${name}: ${detail}`);
    console.log(
      `- load: ${CONFIG.rate} req/s offered (${stats.skipped} not started: client in-flight cap), 50% keyed; ` +
        `${acked.length} acknowledged, ${live.applied.length} events applied, ${live.outbox.length} outbox rows, ` +
        `${probe.deliveries.length} deliveries (${total.duplicateMessages} duplicates); keyed requests that gave up: ${keyedGaveUp}`,
    );
    console.log(
      `- raw limit, same run: serial replay of resolve_contact ${replayed.eventsPerSec.toFixed(0)} events/s; ` +
        `offered load = ${((CONFIG.rate / replayed.eventsPerSec) * 100).toFixed(0)}% of it` +
        (baseline
          ? `; baseline acknowledged ${((baseline.acked / CONFIG.baselineMs) * 1000).toFixed(0)} req/s`
          : ""),
    );
    for (const service of services) {
      for (const exit of service.unexpectedExits) {
        console.log(
          `- ${service.name} exited unexpectedly at +${((exit.at - started) / 1000).toFixed(0)} s (code ${exit.code}, signal ${exit.signal})`,
        );
      }
    }
    console.log(
      `- after the drain: worker group committed lag ${committedLag ?? "unreadable"} messages; Debezium slot lag ${slotLag ?? "?"} bytes`,
    );
    console.log(`- elapsed: ${(elapsedMs / 1000).toFixed(0)} s`);
    mkdirSync(join(root, "faults", "results"), { recursive: true });
    writeFileSync(
      join(root, "faults", "results", "latest.json"),
      `${JSON.stringify(
        {
          run,
          finishedAt: new Date().toISOString(),
          elapsedMs,
          config: CONFIG,
          phases,
          total,
          invariants: invariants.map(([name, ok, detail]) => ({ name, ok, detail })),
          failures,
          committedLag,
          slotLagBytes: slotLag,
          replayEventsPerSec: replayed.eventsPerSec,
          unexpectedExits: services.map((svc) => ({ name: svc.name, exits: svc.unexpectedExits })),
        },
        null,
        2,
      )}\n`,
    );
    if (failures.length > 0) {
      console.log(`\nFAILED:\n${failures.map((f) => `  - ${f}`).join("\n")}`);
      return 1;
    }
    console.log("\nall invariants held");
    return 0;
  } finally {
    await load?.stop().catch(() => {});
    await probe.stop();
    await Promise.all(services.map((service) => service.stop()));
    for (const service of services) service.close();
    await admin.end().catch(() => {});
  }
}

const failures: string[] = [];
main().then(
  (code) => {
    say(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    process.exit(code);
  },
  (error) => {
    console.error(`[faults] ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
