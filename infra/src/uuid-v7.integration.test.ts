import { testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";

// The outbox tables' ids (migration 059): UUIDs of version 7 whose first 48 bits are the clock in milliseconds, so
// rows written later get larger keys (insertions at the right edge of the primary key, not on random leaves). Each
// table's column default is read from the catalog and evaluated on its own: no row is written (a committed one
// would be streamed, and an open transaction would hold back the prune tests' marks).
describe("time-ordered outbox ids", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 1 });

  afterAll(async () => {
    await admin.end();
  });

  for (const table of ["outbox", "segment_outbox"]) {
    it(`${table}: version 7, RFC 4122 variant, the clock in the first 48 bits, ordered across milliseconds, never repeated`, async () => {
      const { rows: defaults } = await admin.query<{ expr: string }>(
        `SELECT pg_get_expr(d.adbin, d.adrelid) AS expr FROM pg_attrdef d
         JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
         WHERE d.adrelid = $1::regclass AND a.attname = 'id'`,
        [`public.${table}`],
      );
      const expr = defaults[0]!.expr;
      expect(expr).toContain("clock_timestamp()");
      const ids: Array<{ id: string; at: Date }> = [];
      for (let i = 0; i < 30; i++) {
        const { rows } = await admin.query<{ id: string; at: Date }>(
          `SELECT (${expr})::text AS id, clock_timestamp() AS at, pg_sleep(0.002)`,
        );
        ids.push(rows[0]!);
      }
      const { rows: many } = await admin.query<{ n: number; distinct: number }>(
        `SELECT count(*)::int AS n, count(DISTINCT id)::int AS distinct
         FROM (SELECT (${expr}) AS id FROM generate_series(1, 10000)) s`,
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
  }
});
