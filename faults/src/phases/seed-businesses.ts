import type pg from "pg";
import { CONFIG } from "../config.ts";
import type { LoadBusiness } from "../load.ts";
import { npm } from "../npm-run.ts";

/** FAULTS_BUSINESSES new businesses, each with an ingest key made by `npm run ingest-keys`. */
export async function seedBusinesses(
  admin: pg.Pool,
  env: Record<string, string>,
  runId: string,
): Promise<LoadBusiness[]> {
  const businesses: LoadBusiness[] = [];
  for (let i = 0; i < CONFIG.businesses; i++) {
    const { rows } = await admin.query<{ id: string }>(
      "INSERT INTO businesses (name, owner_id, default_country) VALUES ($1, gen_random_uuid(), 'US') RETURNING id",
      [`faults ${runId} ${i}`],
    );
    businesses.push({ businessId: rows[0]!.id, ingestKey: "" });
  }
  await Promise.all(
    businesses.map(async (b) => {
      const out = await npm(["ingest-keys", "--", "create", b.businessId, "faults"], env);
      b.ingestKey = /(ik_[A-Za-z0-9_-]+)/.exec(out)?.[1] ?? "";
      if (!b.ingestKey) throw new Error("ingest-keys printed no key");
    }),
  );
  return businesses;
}
