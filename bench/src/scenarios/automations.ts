import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import { createEndpoint, createTrigger, deploymentKey } from "@crm/automations";
import { ensureTopics } from "@crm/kafka";
import { freePort, poll, sleep } from "@crm/process";
import pg from "pg";
import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";
import { readCpuTicks } from "../sampler.ts";
import { startBenchService } from "../services.ts";
import { summarize } from "../stats.ts";

/**
 * Issue 17, automations: contact.updated.v1-shaped messages written straight to a private topic (the service's
 * input; the pipeline before it is measured by scenario 4), one trigger on contact.created, one endpoint on a local
 * receiver. (a) paced at 100 messages/s: message produced -> first delivery attempt received, p50/p95/p99;
 * (b) a burst of BENCH_AUTOMATIONS_BURST messages: deliveries/s the receiver gets (signed, keep-alive).
 */
export const automations: Scenario = {
  name: "automations",
  selectedBy: [17],
  async run(bench) {
    const { cfg, env } = bench;
    const burst = Number(process.env.BENCH_AUTOMATIONS_BURST ?? 20_000);
    const paced = Math.max(1, cfg.durationS) * 100;
    const topic = `contact.updated.v1.bench-${bench.runId}`;
    const groupId = `automations-bench-${bench.runId}`;
    const admin = bench.kafka.kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic, numPartitions: 6 }]);

    const businessId = randomUUID();
    await bench.admin.query(
      "INSERT INTO businesses (id, name, owner_id, plan, default_country) VALUES ($1, $2, $3, 'bench', 'US')",
      [businessId, `bench automations ${bench.runId}`, randomUUID()],
    );
    const count = paced + burst;
    const { rows: contacts } = await bench.admin.query<{ id: string }>(
      `INSERT INTO crm_contacts (business_id, email, first_seen_at, last_seen_at)
       SELECT $1, 'c' || g || '@bench.example', now(), now() FROM generate_series(1, $2) g RETURNING id`,
      [businessId, count],
    );

    // Receiver: notes when each webhook-id arrived and when its input was produced (payload's occurred_at).
    const arrivals = new Map<string, { at: number; producedAt: number }>();
    const port = await freePort();
    const server: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const at = Date.now();
        const id = String(req.headers["webhook-id"]);
        if (!arrivals.has(id)) {
          const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          arrivals.set(id, { at, producedAt: Date.parse(body.data.cause.occurred_at) });
        }
        res.end("ok");
      });
    });
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));

    const service = new pg.Pool({ connectionString: env.DATABASE_URL, max: 1 });
    const key = deploymentKey(env.AUTOMATIONS_SECRET_KEY!);
    const client = await service.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT set_config('app.business_id', $1, true)", [businessId]);
      await createEndpoint(client, key, businessId, { url: `http://127.0.0.1:${port}/hook` });
      await createTrigger(client, businessId, { name: "bench", on: { kind: "contact.created" } });
      await client.query("COMMIT");
    } finally {
      client.release();
      await service.end();
    }

    const metricsPort = await freePort();
    const automations = await startBenchService({
      name: "automations",
      entry: "services/automations/src/main.ts",
      env: {
        AUTOMATIONS_PORT: String(metricsPort),
        AUTOMATIONS_GROUP_ID: groupId,
        AUTOMATIONS_CONTACT_TOPIC: topic,
        AUTOMATIONS_MEMBERSHIP_TOPIC: "",
        AUTOMATIONS_EVENTS_TOPIC: "",
        AUTOMATIONS_FROM_BEGINNING: "1",
        AUTOMATIONS_ALLOW_PRIVATE_TARGETS: "1",
        AUTOMATIONS_ENDPOINT_CONCURRENCY: process.env.BENCH_AUTOMATIONS_CONCURRENCY ?? "128",
        AUTOMATIONS_MAX_IN_FLIGHT: "512",
      },
      healthUrl: `http://127.0.0.1:${metricsPort}/readyz`,
      logFile: `${bench.logDir}/bench-${bench.runId}-automations.log`,
      profileDir: cfg.profile ? bench.profileDir : undefined,
    });
    const producer = bench.kafka.kafka.producer();
    await producer.connect();
    const message = (contactId: string) => {
      const now = new Date().toISOString();
      return {
        key: contactId,
        headers: { id: randomUUID(), type: "contact.created", business_id: businessId },
        value: JSON.stringify({
          contact_id: contactId,
          business_id: businessId,
          version: 1,
          change: "created",
          changed_fields: ["email"],
          contact: { email: `${contactId}@bench.example`, first_seen_at: now, last_seen_at: now },
          identities: [],
          cause_event_id: randomUUID(),
          occurred_at: now,
        }),
      };
    };
    try {
      say(`automations: ${paced} messages at 100/s, then a burst of ${burst}`);
      for (let i = 0; i < paced; i += 10) {
        await producer.send({ topic, messages: contacts.slice(i, i + 10).map((c) => message(c.id)) });
        await sleep(100);
      }
      await poll("the paced deliveries", async () => (arrivals.size >= paced ? true : undefined), {
        timeoutMs: 120_000,
      });
      const latency = summarize([...arrivals.values()].map((a) => a.at - a.producedAt));

      const before = arrivals.size;
      const burstContacts = contacts.slice(paced);
      const ticksBefore = readCpuTicks(automations.pid);
      const produceStart = Date.now();
      const sends = [];
      for (let i = 0; i < burstContacts.length; i += 500) {
        sends.push(
          producer.send({ topic, messages: burstContacts.slice(i, i + 500).map((c) => message(c.id)) }),
        );
      }
      await Promise.all(sends);
      say(`  burst produced in ${fmt((Date.now() - produceStart) / 1000, 2)} s`);
      await poll("the burst's deliveries", async () => (arrivals.size >= before + burst ? true : undefined), {
        timeoutMs: 600_000,
      });
      // CPU the service spent per delivery (Linux clock ticks of 10 ms): what a quiet machine's cores would allow.
      const cpuMsPerDelivery = ((readCpuTicks(automations.pid) - ticksBefore) * 10) / burst;
      const times = [...arrivals.values()].slice(before).map((a) => a.at);
      const span = (Math.max(...times) - Math.min(...times)) / 1000;
      const perSec = burst / span;
      // How fast the consumer turned the burst into deliveries (their created_at), apart from how fast they went out.
      const { rows: made } = await bench.admin.query(
        `SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 AS span FROM (
           SELECT created_at FROM automation_deliveries WHERE business_id = $1 ORDER BY created_at DESC LIMIT $2) d`,
        [businessId, burst],
      );
      const matchedPerSec = burst / Number(made[0].span);
      say(
        `  message -> first attempt p50/p95/p99 ${fmt(latency.p50)} / ${fmt(latency.p95)} / ${fmt(latency.p99)} ms; ` +
          `${fmt(perSec)} deliveries/s (burst of ${burst} in ${fmt(span)} s; matched ${fmt(matchedPerSec)}/s); ` +
          `service CPU ${fmt(cpuMsPerDelivery, 2)} ms per delivery`,
      );
      bench.results.automations = {
        pacedRate: 100,
        firstAttemptMs: latency,
        burst,
        deliveriesPerSec: perSec,
        matchedPerSec,
        cpuMsPerDelivery,
      };
    } finally {
      await producer.disconnect();
      await automations.stop();
      server.close();
      await admin.deleteTopics({ topics: [topic] }).catch(() => {});
      await admin.deleteGroups([groupId]).catch(() => {});
      await admin.disconnect();
    }
  },
};
