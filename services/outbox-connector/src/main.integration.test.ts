import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { repoRoot } from "@crm/config";
import { poll } from "@crm/process";
import { createBusiness, freePort, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";

// The operator commands as operators run them: npm run connector -- status|monitor, npm run tail.
describe("outbox-connector commands", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const children: ChildProcess[] = [];

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await admin.end();
  });

  function run(args: string[], extraEnv: Record<string, string> = {}) {
    return spawnSync("npm", ["run", "-s", ...args], {
      cwd: repoRoot(),
      encoding: "utf8",
      env: { ...process.env, ...extraEnv },
      timeout: 60_000,
    });
  }

  function start(args: string[], extraEnv: Record<string, string> = {}) {
    // node itself (not npx), so a signal reaches the process under test.
    const child = spawn(process.execPath, ["--import", "tsx", ...args], {
      cwd: repoRoot(),
      env: { ...process.env, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.on("data", (chunk) => (output += chunk));
    child.stderr!.on("data", (chunk) => (output += chunk));
    children.push(child);
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    return { child, output: () => output, exited };
  }

  it("status prints connector state, slot lag in bytes and wal_status, and exits 3 when the alert fires", () => {
    const ok = run(["connector", "--", "status"]);
    expect(ok.status, ok.stderr).toBe(0);
    const status = JSON.parse(ok.stdout);
    expect(status).toMatchObject({
      connector: "RUNNING",
      tasks: ["RUNNING"],
      slot: { slot_name: "crm_outbox", active: true, wal_status: "reserved", lag_bytes: expect.any(Number) },
      lagAlert: false,
    });
    // A 1-byte threshold: the alert fires whenever any WAL is unconfirmed, and the exit code follows it.
    const alert = run(["connector", "--", "status"], { SLOT_LAG_ALERT_BYTES: "1" });
    const parsed = JSON.parse(alert.stdout);
    expect(parsed.lagAlert).toBe(parsed.slot.lag_bytes > 1);
    expect(alert.status).toBe(parsed.lagAlert ? 3 : 0);
  });

  it("monitor serves slot lag, wal_status and the alert as Prometheus metrics", async () => {
    const port = await freePort();
    const monitor = start(["services/outbox-connector/src/main.ts", "monitor"], {
      OUTBOX_MONITOR_PORT: String(port),
      OUTBOX_MONITOR_INTERVAL_MS: "500",
      OUTBOX_PRUNE_INTERVAL_MS: "0",
    });
    const text = await poll(
      "monitor metrics",
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
        const body = res?.ok ? await res.text() : "";
        return body.includes('outbox_slot_lag_bytes{slot="crm_outbox"}') ? body : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(text).toContain('outbox_connector_running{connector="crm-outbox"} 1');
    expect(text).toContain('outbox_slot_active{slot="crm_outbox"} 1');
    expect(text).toContain('outbox_slot_wal_status{slot="crm_outbox",status="reserved"} 1');
    expect(text).toContain('outbox_slot_lag_alert{slot="crm_outbox"} 0');
    expect(text).toContain("outbox_slot_lag_alert_threshold_bytes 268435456");
    monitor.child.kill("SIGTERM");
    expect(await monitor.exited).toBe(0);
  });

  it("tail prints one business's messages decoded, with email and phone masked", async () => {
    const { businessId } = await createBusiness(admin);
    const { businessId: other } = await createBusiness(admin);
    const insert = (business: string) =>
      admin.query(
        `INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id)
         VALUES ('contact', gen_random_uuid()::text, 'contact.updated', $1, $2)`,
        [{ business_id: business, contact: { email: "alice@example.com", phone: "+15551234567" } }, business],
      );
    await insert(other);
    await insert(businessId);
    const tail = start([
      "services/outbox-connector/src/tail.ts",
      "contact.updated.v1",
      "--business",
      businessId,
      "--from-beginning",
      "--max",
      "1",
    ]);
    expect(await tail.exited).toBe(0);
    const lines = tail.output().trim().split("\n");
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({
      topic: "contact.updated.v1",
      headers: { business_id: businessId, type: "contact.updated" },
      value: { business_id: businessId, contact: { email: "[masked]", phone: "[masked]" } },
    });
    expect(tail.output()).not.toContain("alice@example.com");
  });
});
