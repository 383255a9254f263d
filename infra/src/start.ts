import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnvFile, repoRoot, stackDir } from "@crm/config";
import { TOPICS } from "@crm/kafka";
import { SignJWT } from "jose";
import pg from "pg";

/*
 * `npm start`: the whole pipeline with a demo. Brings the stack up (unless it is already), applies migrations,
 * registers the connector, seeds a demo business and user, starts ingest-api and resolver-worker, sends a short
 * demo sequence and prints what happened, then keeps running until Ctrl-C, which stops what it started.
 */

const DEMO = {
  businessId: "00000000-0000-4000-8000-00000000b001",
  ownerId: "00000000-0000-4000-8000-00000000a001",
  outsiderId: "00000000-0000-4000-8000-00000000a002",
};

const root = repoRoot();
const say = (line: string) => console.log(`[demo] ${line}`);
const children: ChildProcess[] = [];

function npm(args: string[]): number {
  return spawnSync("npm", ["run", "--silent", ...args], { cwd: root, stdio: "inherit" }).status ?? 1;
}

function startService(name: string, entry: string, env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", entry], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Services log JSON; the demo shows one short line per log record.
  const relay = (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n").filter(Boolean)) {
      try {
        const record = JSON.parse(line) as { level: number; msg: string };
        if (record.level >= 30) console.log(`  [${name}] ${record.msg}`);
      } catch {
        console.log(`  [${name}] ${line}`);
      }
    }
  };
  child.stdout?.on("data", relay);
  child.stderr?.on("data", relay);
  children.push(child);
  return child;
}

async function waitHealthy(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${url} exited with ${child.exitCode}`);
    const ok = await fetch(url, { signal: AbortSignal.timeout(1_000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${url} not healthy after 60 s`);
}

async function main(): Promise<void> {
  const stackWasUp = npm(["stack", "--", "status"]) === 0;
  if (!stackWasUp && npm(["stack", "--", "up"]) !== 0) throw new Error("stack did not come up");
  if (npm(["migrate"]) !== 0) throw new Error("migrations failed");
  if (npm(["connector", "--", "register"]) !== 0) throw new Error("connector registration failed");
  if (npm(["schemas", "--", "register"]) !== 0) throw new Error("schema registration failed");
  const env = parseEnvFile(readFileSync(join(stackDir(), "env"), "utf8"));
  Object.assign(process.env, env, process.env);

  const admin = new pg.Client({ connectionString: env.DATABASE_ADMIN_URL });
  await admin.connect();
  await admin.query(
    `INSERT INTO businesses (id, name, owner_id, default_country) VALUES ($1, 'Demo Coffee Co', $2, 'US')
     ON CONFLICT (id) DO NOTHING`,
    [DEMO.businessId, DEMO.ownerId],
  );
  say(`demo business ${DEMO.businessId} (owner ${DEMO.ownerId})`);

  const api = startService("ingest-api", "services/ingest-api/src/main.ts", {});
  // Cluster mode runs two workers in one consumer group (partitions split between them); START_WORKERS overrides.
  const workerCount = Number(process.env.START_WORKERS ?? (process.env.STACK_MODE === "cluster" ? 2 : 1));
  const workers = Array.from({ length: workerCount }, (_, i) => {
    const port = String(Number(env.WORKER_PORT) + i);
    const name = workerCount === 1 ? "resolver-worker" : `resolver-worker-${i + 1}`;
    return { port, child: startService(name, "services/resolver-worker/src/main.ts", { WORKER_PORT: port }) };
  });
  await Promise.all([
    waitHealthy(`${env.INGEST_URL}/healthz`, api),
    ...workers.map((w) => waitHealthy(`http://127.0.0.1:${w.port}/healthz`, w.child)),
  ]);

  const { createKafka } = await import("@crm/kafka");
  const kafka = createKafka({ brokers: env.KAFKA_BROKERS!.split(","), clientId: "demo" });
  const kafkaAdmin = kafka.admin();
  await kafkaAdmin.connect();
  const startOffsets = await kafkaAdmin.fetchTopicOffsets(TOPICS.contactUpdated);
  await kafkaAdmin.disconnect();
  const seen: { key: string; type: string; version: number; change: string }[] = [];
  const consumer = kafka.consumer({ groupId: `demo-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.contactUpdated, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (message.headers?.business_id?.toString() !== DEMO.businessId) return;
      const value = JSON.parse(message.value?.toString() ?? "{}");
      seen.push({
        key: message.key?.toString() ?? "",
        type: String(message.headers?.type),
        version: value.version,
        change: value.change,
      });
    },
  });
  for (const { partition, offset } of startOffsets)
    consumer.seek({ topic: TOPICS.contactUpdated, partition, offset });

  const secret = new TextEncoder().encode(env.JWT_SECRET);
  const token = (sub: string) =>
    new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(sub)
      .setAudience("authenticated")
      .setExpirationTime("12h")
      .sign(secret);
  const ownerToken = await token(DEMO.ownerId);
  const run = Date.now().toString(36);
  const email = `alice.${run}@example.com`;
  const phone = `+1555${String(Date.now() % 10_000_000).padStart(7, "0")}`;
  const steps: [string, string, unknown][] = [
    [
      "signup with an email",
      ownerToken,
      { type: "signup", contact: { email: email.toUpperCase(), name: "Alice" } },
    ],
    [
      "a purchase known only by phone",
      ownerToken,
      { type: "purchase", contact: { phone }, props: { amount: 4.5 } },
    ],
    [
      "login with email + phone + account id (merges the two)",
      ownerToken,
      { type: "login", contact: { external_id: `acct_${run}`, email, phone } },
    ],
    [
      "an outsider writing for the demo business",
      await token(DEMO.outsiderId),
      { type: "spoof", business_id: DEMO.businessId },
    ],
  ];
  for (const [label, bearer, body] of steps) {
    const res = await fetch(`${env.INGEST_URL}/v1/track`, {
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    say(`${label}: HTTP ${res.status} ${await res.text()}`);
  }

  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && seen.length < 4) await new Promise((resolve) => setTimeout(resolve, 250));
  const contacts = await admin.query(
    `SELECT c.id, c.external_id, c.email, c.phone, c.name, c.version, c.merged_into
     FROM crm_contacts c WHERE c.business_id = $1 AND (c.email = $2 OR c.phone = $3) ORDER BY c.created_at`,
    [DEMO.businessId, email, phone],
  );
  say("contacts touched by this demo run:");
  for (const c of contacts.rows) {
    say(
      `  ${c.id} v${c.version} ${c.merged_into ? `merged into ${c.merged_into}` : `ext=${c.external_id} email=${c.email} phone=${c.phone} name=${c.name}`}`,
    );
  }
  say(`messages on ${TOPICS.contactUpdated} for the demo business: ${seen.length}`);
  for (const m of seen) say(`  key=${m.key} ${m.type} version=${m.version}`);
  await consumer.disconnect();
  await admin.end();

  say("");
  say(
    `pipeline running. API ${env.INGEST_URL}, worker metrics ${env.WORKER_URL}/metrics, Connect ${env.CONNECT_URL}`,
  );
  say(`try: curl -X POST ${env.INGEST_URL}/v1/track -H 'authorization: Bearer ${ownerToken}' \\`);
  say(
    `       -H 'content-type: application/json' -d '{"type":"hello","contact":{"email":"you@example.com"}}'`,
  );
  say(
    `Ctrl-C stops the services${stackWasUp ? " (the stack was already running and stays up)" : " and the stack"}.`,
  );

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    say("stopping...");
    for (const child of children) child.kill("SIGTERM");
    await Promise.all(
      children.map((c) => (c.exitCode === null ? new Promise((r) => c.once("exit", r)) : undefined)),
    );
    if (!stackWasUp) npm(["stack", "--", "down"]);
    process.exit(0);
  };
  process.on("SIGINT", () => void stop());
  process.on("SIGTERM", () => void stop());
  if (process.env.DEMO_EXIT === "1") await stop();
}

main().catch((error) => {
  console.error(`[demo] ${(error as Error).message}`);
  for (const child of children) child.kill("SIGTERM");
  process.exit(1);
});
