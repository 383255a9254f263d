import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { repoRoot, stackEnv } from "@crm/config";
import { createBusiness, freePort, signUserToken, startService, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";

// The real entry point as a process: wiring from the environment, readiness, and a SIGTERM that drains the
// requests in flight (each gets its answer) before the process exits 0.
describe("ingest-api process", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  afterAll(() => admin.end());

  it("serves readyz, drains in-flight requests on SIGTERM, and logs no PII or secrets", async () => {
    const port = await freePort();
    const api = await startService({
      entry: "services/ingest-api/src/main.ts",
      env: {
        INGEST_PORT: String(port),
        INGEST_INSTANCE_GROUP: `test-${randomUUID()}`,
        RATE_LIMIT_USER_PER_SEC: "1000",
      },
      healthUrl: `http://127.0.0.1:${port}/healthz`,
    });
    const email = `drain-${randomUUID()}@example.com`;
    const idemKey = `drain-key-${randomUUID()}`;
    const { businessId, ownerId } = await createBusiness(admin);
    const token = await signUserToken(env.jwtSecret, ownerId);
    try {
      const ready = await fetch(`${api.url}/readyz`);
      expect(await ready.json()).toEqual({ ok: true, checks: { kafka: true, postgres: true } });
      const track = (i: number) =>
        fetch(`${api.url}/v1/track`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
            ...(i === 0 ? { "idempotency-key": idemKey } : {}),
          },
          body: JSON.stringify({
            type: "drain",
            business_id: businessId,
            contact: { email, phone: "+1 555 123 4567" },
          }),
        }).then((res) => res.status);
      expect(await track(0)).toBe(202);
      const inFlight = Array.from({ length: 40 }, (_, i) => track(i + 1));
      await new Promise((resolve) => setTimeout(resolve, 20));
      const exited = api.stop("SIGTERM");
      const statuses = await Promise.allSettled(inFlight);
      expect(await exited).toBe(0);
      // Every request the server had taken got its full answer; none was cut off mid-way.
      const answered = statuses.filter((s) => s.status === "fulfilled").map((s) => s.value);
      expect(answered.length).toBeGreaterThan(0);
      expect(answered.every((status) => status === 202)).toBe(true);
      const output = api.output();
      expect(output).toContain("shutting down: draining in-flight requests");
      expect(output).toContain("ingest-api stopped");
    } finally {
      await api.stop("SIGKILL");
    }
    const logs = api.output();
    expect(logs).toContain("event_tracked");
    for (const secret of [email, "+15551234567", "555 123 4567", token, idemKey, ownerId]) {
      expect(logs).not.toContain(secret);
    }
  });

  it("refuses to start with a role that can bypass RLS", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "services/ingest-api/src/main.ts"], {
      cwd: repoRoot(),
      env: { ...process.env, ...stackEnv(), DATABASE_URL: env.adminUrl, INGEST_PORT: "0" },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(
      /refusing to start: role postgres can bypass row level security/,
    );
  });
});
