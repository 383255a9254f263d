import { randomBytes } from "node:crypto";
import { poll } from "@crm/process";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { pruneOutbox } from "./prune.ts";

// A slot of our own that nobody consumes stands in for Debezium: it confirms exactly what we advance it to.
describe("outbox pruning", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
  const slot = `crm_prune_test_${randomBytes(4).toString("hex")}`;
  const businesses: string[] = [];
  let businessId: string;

  let decoyMark: string;

  beforeAll(async () => {
    await admin.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
    // An old mark whose LSN sorts last as text and first as pg_lsn: a pruner that picked it would stall.
    const decoy = await admin.query<{ id: string }>(
      "INSERT INTO app.outbox_prune_marks (oldest_running, lsn) VALUES ('1', '0/9FFFFFF') RETURNING id",
    );
    decoyMark = decoy.rows[0]!.id;
  });

  beforeEach(async () => {
    ({ businessId } = await createBusiness(admin));
    businesses.push(businessId);
  });

  afterAll(async () => {
    await admin.query("SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1", [
      slot,
    ]);
    await admin.query("DELETE FROM outbox WHERE business_id = ANY($1)", [businesses]);
    await admin.query("DELETE FROM segment_outbox WHERE business_id = ANY($1)", [businesses]);
    await admin.query("DELETE FROM app.outbox_prune_marks WHERE id = $1", [decoyMark]);
    await admin.end();
  });

  const insertRow = (db: pg.Pool | pg.PoolClient, label: string) =>
    db
      .query<{ id: string }>(
        `INSERT INTO outbox (aggregatetype, aggregateid, type, payload, business_id)
         VALUES ('contact', $1, 'contact.updated', '{}', $2) RETURNING id`,
        [label, businessId],
      )
      .then((r) => r.rows[0]!.id);
  const remaining = async () =>
    (
      await admin.query<{ aggregateid: string }>(
        "SELECT aggregateid FROM outbox WHERE business_id = $1 ORDER BY aggregateid",
        [businessId],
      )
    ).rows.map((r) => r.aggregateid);
  const prune = (retentionMs = 0) => pruneOutbox(admin, { slots: [slot], retentionMs, businessId });
  const advanceSlot = (lsn: string) =>
    admin.query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)", [slot, lsn]);

  it("never deletes a row the slot has not confirmed, even one committed before the prune ran", async () => {
    await insertRow(admin, "a-early");
    // A transaction that inserted a row and is still open while the pruner takes its mark...
    const open = await admin.connect();
    await open.query("BEGIN");
    await insertRow(open, "c-in-flight");
    const first = await prune();
    expect(first.deleted).toBe(0);
    // ...commits after the mark: its commit record lies after the mark's LSN.
    await open.query("COMMIT");
    open.release();
    await insertRow(admin, "d-late");

    // The slot confirms up to the first mark only: the in-flight and later rows are not streamed yet.
    await advanceSlot(first.takenMarkLsn);
    for (let i = 0; i < 3; i++) {
      await prune();
      const rows = await remaining();
      expect(rows).toContain("c-in-flight");
      expect(rows).toContain("d-late");
    }

    // Once the slot has confirmed everything, later marks become usable and every row goes. A transaction left
    // open elsewhere on the shared database (another test) rightly holds pruning back until it ends.
    await poll(
      "every confirmed row pruned",
      async () => {
        const { rows } = await admin.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
        await prune();
        await advanceSlot(rows[0]!.lsn);
        return (await remaining()).length === 0 ? true : undefined;
      },
      { timeoutMs: 60_000 },
    );
  });

  it("keeps confirmed rows younger than the retention, and prunes nothing for a missing slot", async () => {
    await insertRow(admin, "young");
    const { rows } = await admin.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
    await prune(3_600_000);
    await advanceSlot(rows[0]!.lsn);
    const kept = await prune(3_600_000);
    expect(kept.deleted).toBe(0);
    expect(await remaining()).toEqual(["young"]);
    const missing = await pruneOutbox(admin, { slots: ["no_such_slot"], retentionMs: 0, businessId });
    expect(missing).toMatchObject({ deleted: 0, confirmedLsn: null });
    expect(await remaining()).toEqual(["young"]);
  });

  it("prunes segment_outbox (segment.membership.v1) by the same marks: confirmed rows go, later ones stay", async () => {
    const { rows: made } = await admin.query<{ id: string }>(
      `INSERT INTO crm_contacts (business_id, first_seen_at, last_seen_at) VALUES ($1, now(), now()) RETURNING id`,
      [businessId],
    );
    const contactId = made[0]!.id;
    const insertChange = (label: string) =>
      admin.query(
        `INSERT INTO segment_outbox (aggregateid, type, payload, business_id, contact_id)
         VALUES ($1::text, 'segment.entered', jsonb_build_object('label', $2::text), $3, $4::uuid)`,
        [contactId, label, businessId, contactId],
      );
    const left = async () =>
      (
        await admin.query<{ label: string }>(
          "SELECT payload->>'label' AS label FROM segment_outbox WHERE business_id = $1 ORDER BY 1",
          [businessId],
        )
      ).rows.map((r) => r.label);
    await insertChange("confirmed");
    const first = await prune();
    await insertChange("after-the-mark");
    await advanceSlot(first.takenMarkLsn);
    // Another test's open transaction on the shared database may hold the first row back for a while.
    await poll(
      "the confirmed change pruned",
      async () => {
        await prune();
        const rows = await left();
        expect(rows).toContain("after-the-mark");
        return rows.includes("confirmed") ? undefined : true;
      },
      { timeoutMs: 60_000 },
    );
    expect(await left()).toEqual(["after-the-mark"]);
  });
});
