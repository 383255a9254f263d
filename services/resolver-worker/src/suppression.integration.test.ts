import { randomUUID } from "node:crypto";
import { createPool, type PoolClient, sqlLiteral } from "@crm/db";
import { type IdentifierType, suppressionHash } from "@crm/identity";
import { poll } from "@crm/process";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { resolveContact, resolveContacts } from "./resolve-contact.ts";
import { isSuppressed, withSuppressionCheck } from "./suppression.ts";
import { rawEvent } from "./test-harness.ts";

// The suppression check against the real Postgres (issue 18): the erasure and the worker's resolve take the same
// advisory locks, so whichever holds them first makes the other wait, and an erased person is never recreated.
const env = testEnv();
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
const service = createPool({
  connectionString: env.databaseUrl,
  applicationName: "suppression-test",
  max: 8,
});
const SECRET = "suppression-test-secret-0123456789";

afterAll(async () => {
  await Promise.all([admin.end(), service.end()]);
});

/** Steps 1 and 2 of an erasure (infra/sql/50_erasure.sql) in the client's open transaction, as ingest-api runs them. */
async function eraseIn(client: PoolClient, businessId: string, type: IdentifierType, value: string) {
  const { rows } = await client.query<{ contacts: string[]; identities: [IdentifierType, string][] }>(
    "SELECT contacts, identities FROM app.erasure_lock($1, $2, $3)",
    [businessId, type, value],
  );
  const identities = rows[0]?.identities ?? [];
  const hashes = [...identities, [type, value] as [IdentifierType, string]].map(([t, v]) =>
    suppressionHash(SECRET, businessId, t, v),
  );
  const erased = await client.query<{ counts: Record<string, number> }>(
    "SELECT counts FROM app.erase_contacts($1, $2::uuid[], $3::jsonb, $4::text[], 'test', $5)",
    [businessId, rows[0]?.contacts ?? [], JSON.stringify(identities), hashes, type],
  );
  return erased.rows[0]!.counts;
}

async function begin(businessId: string): Promise<PoolClient> {
  const client = await service.connect();
  await client.query("BEGIN");
  await client.query("SELECT set_config('app.business_id', $1, true)", [businessId]);
  return client;
}

/** Waits until some backend waits for a lock while running a statement that contains `marker`. */
const waitingOn = (marker: string) =>
  poll(
    `a statement with ${marker} waiting for a lock`,
    async () => {
      const { rows } = await admin.query(
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position($1 in query) > 0",
        [marker],
      );
      return rows.length > 0 || undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50 },
  );

const count = async (sql: string, params: unknown[]) => Number((await admin.query(sql, params)).rows[0].n);

describe("suppression check", () => {
  it("an event arriving while an erasure holds the person's locks waits, then is rolled back (CRM18) and stores nothing", async () => {
    const { businessId } = await createBusiness(admin);
    const email = `gate-${randomUUID()}@example.com`;
    await resolveContact(service, rawEvent(businessId, { email, external_id: `x-${email}` }), SECRET);
    const erasure = await begin(businessId);
    try {
      const counts = await eraseIn(erasure, businessId, "email", email);
      expect(counts).toMatchObject({ contacts: 1, events: 1, identities: 2 });
      const late = rawEvent(businessId, { email, name: "late" });
      const applying = resolveContact(service, late, SECRET).then(
        () => "applied",
        (error) => (isSuppressed(error) ? "suppressed" : String(error)),
      );
      await waitingOn("suppression_check");
      await erasure.query("COMMIT");
      expect(await applying).toBe("suppressed");
      expect(await count("SELECT count(*) AS n FROM crm_events WHERE id = $1", [late.event_id])).toBe(0);
    } finally {
      erasure.release();
    }
    expect(await count("SELECT count(*) AS n FROM crm_contacts WHERE business_id = $1", [businessId])).toBe(
      0,
    );
  });

  it("an erasure arriving while an event of the person is in flight waits for it, then erases what it wrote too", async () => {
    const { businessId } = await createBusiness(admin);
    const email = `inflight-${randomUUID()}@example.com`;
    const phone = "+15005550006";
    const event = rawEvent(businessId, { email, phone });
    const worker = await begin(businessId);
    let erasing: Promise<Record<string, number>> | undefined;
    let eraser: PoolClient | undefined;
    try {
      // the worker's statement (resolve, then the check), its transaction left open: the event is in flight
      await worker.query(
        withSuppressionCheck(
          SECRET,
          `SELECT * FROM app.resolve_contact(${sqlLiteral(businessId)}::uuid, ${sqlLiteral(email)}, ${sqlLiteral(phone)}, NULL, NULL, ${sqlLiteral(event.event_id)}::uuid)`,
          `${sqlLiteral(event.event_id)}::uuid`,
          [event],
        ),
      );
      eraser = await begin(businessId);
      erasing = eraseIn(eraser, businessId, "email", email);
      await waitingOn("erasure_lock");
      await worker.query("COMMIT");
      expect(await erasing).toMatchObject({ contacts: 1, events: 1, identities: 2, suppressed: 2 });
      await eraser.query("COMMIT");
    } finally {
      worker.release();
      eraser?.release();
    }
    expect(
      await count("SELECT count(*) AS n FROM contact_identities WHERE business_id = $1", [businessId]),
    ).toBe(0);
    // the phone came with the person: an event carrying only it is dropped as well
    const byPhone = rawEvent(businessId, { phone });
    await expect(resolveContact(service, byPhone, SECRET)).rejects.toSatisfy(isSuppressed);
  });

  it("a chunk holding one suppressed event stores none of its events (the worker then applies them one by one)", async () => {
    const { businessId } = await createBusiness(admin);
    const email = `chunk-${randomUUID()}@example.com`;
    const eraser = await begin(businessId);
    try {
      // an identifier never seen: suppressed all the same (its events may still be on their way)
      expect(await eraseIn(eraser, businessId, "email", email)).toMatchObject({ contacts: 0, suppressed: 1 });
      await eraser.query("COMMIT");
    } finally {
      eraser.release();
    }
    const other = rawEvent(businessId, { external_id: `other-${email}` });
    const erased = rawEvent(businessId, { email });
    await expect(resolveContacts(service, [other, erased], SECRET)).rejects.toSatisfy(isSuppressed);
    expect(await count("SELECT count(*) AS n FROM crm_events WHERE business_id = $1", [businessId])).toBe(0);
    const [result] = await resolveContacts(service, [other], SECRET);
    expect(result!.outcome).toBe("created");
    // without the secret (tests of the resolve path alone) nothing is checked
    const [unchecked] = await resolveContacts(service, [rawEvent(businessId, { email })]);
    expect(unchecked!.outcome).toBe("created");
  });
});
