import { randomBytes, randomUUID } from "node:crypto";
import type pg from "pg";
import { BENCH_PLAN } from "./config.ts";

export interface Tenant {
  businessId: string;
  key: string;
}

/** The run's businesses: `main` for scenarios 1-3 and 6, `main` + `others` in 4, `hot` + `others` in 5. */
export interface BenchTenants {
  main: Tenant;
  others: Tenant[];
  hot: Tenant;
  /** The businesses of scenario 4 (main first: stream 0). */
  e2e: Tenant[];
  all: Set<string>;
}

export async function createBenchTenants(
  admin: pg.Pool,
  runId: string,
  count: number,
): Promise<BenchTenants> {
  const main = await createTenant(admin, runId, "main");
  const others = await Promise.all(
    Array.from({ length: count - 1 }, (_, i) => createTenant(admin, runId, `t${i}`)),
  );
  const hot = await createTenant(admin, runId, "hot");
  const e2e = [main, ...others];
  return { main, others, hot, e2e, all: new Set([...e2e, hot].map((tenant) => tenant.businessId)) };
}

/** A business on the bench plan with a fresh ingest key (the same SQL as `npm run ingest-keys -- create`). */
export async function createTenant(admin: pg.Pool, runId: string, label: string): Promise<Tenant> {
  const businessId = randomUUID();
  await admin.query(
    "INSERT INTO businesses (id, name, owner_id, plan, default_country) VALUES ($1, $2, $3, $4, 'US')",
    [businessId, `bench ${label} ${runId}`, randomUUID(), BENCH_PLAN],
  );
  const key = `ik_${randomBytes(32).toString("base64url")}`;
  // hashIngestKey (services/ingest-api/src/auth.ts) is the hex SHA-256 of the key's UTF-8 bytes.
  await admin.query(
    "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), $3)",
    [businessId, key, `bench ${runId}`],
  );
  return { businessId, key };
}
