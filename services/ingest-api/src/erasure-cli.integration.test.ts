import { randomUUID } from "node:crypto";
import { createPool } from "@crm/db";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { runErasure } from "./erasure-cli.ts";

// `npm run erasure` (issue 18) against the real Postgres, with the services' role as the CLI runs.
describe("erasure CLI", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  const pool = createPool({ connectionString: env.databaseUrl, applicationName: "erasure-cli-test", max: 2 });
  const deps = { pool, secret: "erasure-cli-test-secret-0123456789", actor: "cli:test" };

  afterAll(async () => {
    await Promise.all([admin.end(), pool.end()]);
  });

  async function run(...args: string[]) {
    const printed: string[] = [];
    const code = await runErasure(args, deps, (line) => printed.push(line));
    return { code, printed, json: printed.map((line) => (line.startsWith("{") ? JSON.parse(line) : line)) };
  }

  it("erases by phone (normalized with the business's country), lists the audit, lifts once; bad usage is 2", async () => {
    const { businessId } = await createBusiness(admin, { country: "GB" });
    // a contact as the worker makes them (admin role, tenant set on its one connection)
    const client = await admin.connect();
    let contactId: string;
    try {
      await client.query("SELECT set_config('app.business_id', $1, false)", [businessId]);
      const { rows } = await client.query(
        "SELECT contact_id FROM app.resolve_contact($1, NULL, '+447911123456', 'cli-ext', 'Cli')",
        [businessId],
      );
      contactId = rows[0].contact_id;
      await client.query("RESET app.business_id");
    } finally {
      client.release();
    }

    const erased = await run("erase", businessId, "phone", "07911 123456");
    expect(erased.code).toBe(0);
    expect(erased.json[0]).toMatchObject({
      ok: true,
      contact_ids: [contactId],
      counts: { contacts: 1, identities: 2, events: 1, suppressed: 2 },
    });
    expect(erased.printed.join("\n")).not.toContain("447911123456");
    expect((await admin.query("SELECT 1 FROM crm_contacts WHERE id = $1", [contactId])).rows).toEqual([]);

    const audit = await run("audit", businessId);
    expect(audit.json).toEqual([
      expect.objectContaining({ action: "erase", actor: "cli:test", requested_by: "phone" }),
    ]);
    expect((await run("lift", businessId, "external_id", "cli-ext")).json[0]).toEqual({
      ok: true,
      lifted: 1,
    });
    expect((await run("lift", businessId, "external_id", "cli-ext")).code).toBe(1);
    expect((await run("erase", businessId, "contact_id", randomUUID())).json[0]).toMatchObject({
      ok: false,
      error: "not_found",
    });
    expect((await run("erase", businessId, "email", "not an email")).json[0]).toMatchObject({
      ok: false,
      error: "invalid_request",
    });
    // a junk value identifies no one: suppressing it would drop every event carrying it
    expect((await run("erase", businessId, "external_id", "Unknown")).json[0]).toMatchObject({
      ok: false,
      error: "invalid_request",
    });
    expect((await run("lift", businessId, "contact_id", randomUUID())).code).toBe(2);
    expect((await run("erase", "not-a-uuid", "email", "a@b.co")).code).toBe(2);
    expect((await run("nope", businessId)).code).toBe(2);
  });
});
