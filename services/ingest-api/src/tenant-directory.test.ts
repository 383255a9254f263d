import type { Pool } from "@crm/db";
import { describe, expect, it } from "vitest";
import { PgTenantDirectory } from "./tenant-directory.ts";

// Caching only: a pool that answers from a set of known key hashes and counts its queries.
function fakePool(known: Set<string>) {
  const pool = {
    queries: 0,
    async query(_sql: string, params: unknown[]) {
      pool.queries += 1;
      const hash = params[0] as string;
      return {
        rows: known.has(hash)
          ? [{ key_id: `id-${hash}`, business_id: "b", plan: "standard", default_country: "US" }]
          : [],
      };
    },
  };
  return pool;
}

describe("PgTenantDirectory unknown keys", () => {
  it("answers a repeated unknown key from memory for unknownKeyTtlMs, and a key created meanwhile after it", async () => {
    let now = 0;
    const known = new Set<string>();
    const pool = fakePool(known);
    const directory = new PgTenantDirectory(pool as unknown as Pool, 30_000, {
      unknownKeyTtlMs: 5_000,
      now: () => now,
    });
    expect(await directory.businessOfKey("k1")).toBeUndefined();
    for (let i = 0; i < 100; i++) expect(await directory.businessOfKey("k1")).toBeUndefined();
    expect(pool.queries).toBe(1);

    known.add("k1"); // the key is created now
    now += 4_999;
    expect(await directory.businessOfKey("k1")).toBeUndefined();
    now += 1;
    expect(await directory.businessOfKey("k1")).toMatchObject({ keyId: "id-k1" });
    expect(pool.queries).toBe(2);
  });

  it("keeps at most maxUnknownKeys, and a flood of them never evicts a known key", async () => {
    const known = new Set(["good"]);
    const pool = fakePool(known);
    const directory = new PgTenantDirectory(pool as unknown as Pool, 30_000, {
      maxUnknownKeys: 10,
      now: () => 0,
    });
    expect(await directory.businessOfKey("good")).toBeDefined();
    for (let i = 0; i < 1_000; i++) await directory.businessOfKey(`random-${i}`);
    const before = pool.queries;
    expect(await directory.businessOfKey("good")).toBeDefined();
    expect(await directory.businessOfKey("random-999")).toBeUndefined();
    expect(pool.queries).toBe(before);
    // the oldest unknown keys were forgotten: asked again, they cost a lookup
    await directory.businessOfKey("random-0");
    expect(pool.queries).toBe(before + 1);
  });

  it("shares one lookup among concurrent requests with the same unknown key", async () => {
    const pool = fakePool(new Set());
    const directory = new PgTenantDirectory(pool as unknown as Pool);
    await Promise.all(Array.from({ length: 50 }, () => directory.businessOfKey("same")));
    expect(pool.queries).toBe(1);
  });
});
