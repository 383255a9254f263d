import { testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";

// The outbox tables' ids (migration 059): UUIDs of version 7 whose first 48 bits are the clock in milliseconds, so
// rows written later get larger keys (insertions at the right edge of the primary key, not on random leaves).
describe("app.uuid_v7: time-ordered outbox ids", () => {
  const env = testEnv();
  const service = new pg.Pool({ connectionString: env.databaseUrl, max: 1 });

  afterAll(async () => {
    await service.end();
  });

  it("is a version 7, RFC 4122 variant UUID carrying the clock, ordered across milliseconds, never repeated", async () => {
    const ids: Array<{ id: string; at: Date }> = [];
    for (let i = 0; i < 40; i++) {
      const { rows } = await service.query<{ id: string; at: Date }>(
        "SELECT app.uuid_v7()::text AS id, clock_timestamp() AS at, pg_sleep(0.002)",
      );
      ids.push(rows[0]!);
    }
    const { rows: many } = await service.query<{ n: number; distinct: number }>(
      "SELECT count(*)::int AS n, count(DISTINCT id)::int AS distinct FROM (SELECT app.uuid_v7() AS id FROM generate_series(1, 10000)) s",
    );
    expect(many[0]).toEqual({ n: 10_000, distinct: 10_000 });
    for (const { id, at } of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      const ms = Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16);
      expect(Math.abs(ms - at.getTime())).toBeLessThanOrEqual(1);
    }
    // 2 ms apart: each id sorts after the one before it (as Postgres compares uuids: bytewise)
    const sorted = [...ids].sort((a, b) => (a.id < b.id ? -1 : 1));
    expect(sorted.map((r) => r.id)).toEqual(ids.map((r) => r.id));
  });

  it("is the default id of both outbox tables", async () => {
    const { rows } = await service.query<{ table_name: string; column_default: string }>(
      `SELECT table_name, column_default FROM information_schema.columns
       WHERE table_schema = 'public' AND table_name IN ('outbox', 'segment_outbox') AND column_name = 'id'
       ORDER BY table_name`,
    );
    expect(rows).toEqual([
      { table_name: "outbox", column_default: "app.uuid_v7()" },
      { table_name: "segment_outbox", column_default: "app.uuid_v7()" },
    ]);
  });
});
