import { randomBytes } from "node:crypto";
import { stackEnv } from "@crm/config";
import { CONNECT_SECRET_ENV } from "@crm/infra/stack";
import { createKafka, ensureTopics } from "@crm/kafka";
import { poll } from "@crm/process";
import { testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import {
  connectHeaders,
  connectorSpec,
  connectorStatus,
  registerConnector,
  retireConnector,
} from "./connector.ts";
import { connectorCopy, connectorCopyTopics } from "./test-support.ts";

// Copies of the checked-in connector (own name, slot, topic) on the shared Connect worker; the real connector
// is never touched. Everything created is removed afterwards, the replication slot included.
describe("registering the connector", () => {
  const env = testEnv();
  const base = connectorSpec(stackEnv().DEBEZIUM_DATABASE_URL!);
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const kafka = createKafka({ brokers: env.brokers, clientId: "connector-test" });
  const created: ReturnType<typeof connectorCopy>[] = [];
  const topics: string[] = [];

  function copy() {
    const suffix = randomBytes(4).toString("hex");
    const topic = `test.contact.updated.${suffix}`;
    const spec = connectorCopy(base, suffix, topic);
    created.push(spec);
    topics.push(topic, ...connectorCopyTopics(spec));
    return spec;
  }

  afterAll(async () => {
    for (const spec of created) {
      await retireConnector(env.connectUrl, admin, spec.name, spec.config["slot.name"]!);
    }
    const kafkaAdmin = kafka.admin();
    await kafkaAdmin.connect();
    const existing = new Set(await kafkaAdmin.listTopics());
    await kafkaAdmin.deleteTopics({ topics: topics.filter((t) => existing.has(t)) }).catch(() => {});
    await kafkaAdmin.disconnect();
    await admin.end();
  });

  it("creates, then registering the same config again is a no-op, and a changed config is applied", async () => {
    const spec = copy();
    const kafkaAdmin = kafka.admin();
    await kafkaAdmin.connect();
    await ensureTopics(kafkaAdmin, [
      { topic: spec.config["transforms.outbox.route.topic.replacement"]!, numPartitions: 1 },
    ]);
    await kafkaAdmin.disconnect();

    expect(await registerConnector(env.connectUrl, spec)).toBe("created");
    const slot = await admin.query("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [
      spec.config["slot.name"],
    ]);
    expect(slot.rows).toHaveLength(1);

    expect(await registerConnector(env.connectUrl, spec)).toBe("unchanged");

    const changed = { ...spec, config: { ...spec.config, "heartbeat.interval.ms": "4000" } };
    expect(await registerConnector(env.connectUrl, changed)).toBe("updated");
    // Connect answers 409 while a rebalance triggered by the update is still going on.
    const applied = await poll(
      "the updated config",
      async () => {
        const res = await fetch(`${env.connectUrl}/connectors/${spec.name}/config`, {
          headers: connectHeaders(),
        });
        return res.ok ? ((await res.json()) as Record<string, string>) : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(applied["heartbeat.interval.ms"]).toBe("4000");
    expect(await registerConnector(env.connectUrl, changed)).toBe("unchanged");
    const status = await connectorStatus(env.connectUrl, spec.name);
    expect(status?.connector.state).toBe("RUNNING");
    expect(status?.tasks.map((t) => t.state)).toEqual(["RUNNING"]);
  });

  it("answers 401 without the REST user, and its config shows the password's placeholder, never the password", async () => {
    const url = `${env.connectUrl}/connectors/crm-outbox/config`;
    expect((await fetch(url)).status).toBe(401);
    const wrong = {
      authorization: `Basic ${Buffer.from("connect-admin:not-the-password").toString("base64")}`,
    };
    expect((await fetch(url, { headers: wrong })).status).toBe(401);
    // Writes are refused too: nobody without the REST user rewrites heartbeat.action.query.
    const rewrite = await fetch(url, {
      method: "PUT",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    expect(rewrite.status).toBe(401);

    const res = await fetch(url, { headers: connectHeaders() });
    expect(res.status).toBe(200);
    const config = (await res.json()) as Record<string, string>;
    expect(config["database.password"]).toBe(`\${env:${CONNECT_SECRET_ENV}}`);
    const password = decodeURIComponent(new URL(stackEnv().DEBEZIUM_DATABASE_URL!).password);
    expect(JSON.stringify(config)).not.toContain(password);
  });

  it("fails with the connector's own error text when it cannot run", async () => {
    const spec = copy();
    const broken = { ...spec, config: { ...spec.config, "database.password": "not-the-password" } };
    await expect(registerConnector(env.connectUrl, broken, { timeoutMs: 30_000 })).rejects.toThrow(
      /password authentication failed for user "crm_debezium"/,
    );
  });
});
