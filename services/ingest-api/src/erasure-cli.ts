import { userInfo } from "node:os";
import { parseEnv } from "@crm/config";
import { createPool, type Pool, transaction } from "@crm/db";
import { HttpError } from "@crm/errors";
import { z } from "zod";
import {
  type ErasureTarget,
  erasePerson,
  liftSuppression,
  listAudit,
  normalizeTarget,
  TARGET_TYPES,
  type TargetType,
} from "./erasure.ts";

/**
 * Operator tool for erasures (issue 18), with the services' role and the deployment's ERASURE_HASH_SECRET; the
 * audit records the operator as `cli:<user>`:
 *   npm run erasure -- erase <business_id> <external_id|email|phone|anonymous_id|contact_id> <value>
 *   npm run erasure -- lift <business_id> <external_id|email|phone|anonymous_id> <value>
 *   npm run erasure -- audit <business_id> [limit]
 * Prints one JSON line (ids and counts, never the identifier).
 */
const Env = z.object({ DATABASE_URL: z.string().url(), ERASURE_HASH_SECRET: z.string().min(16) });
const Uuid = z.uuid();
const USAGE =
  "usage: erasure erase <business_id> <external_id|email|phone|anonymous_id|contact_id> <value>\n" +
  "       erasure lift <business_id> <external_id|email|phone|anonymous_id> <value>\n" +
  "       erasure audit <business_id> [limit]";

export async function runErasure(
  args: string[],
  deps: { pool: Pool; secret: string; actor: string },
  print: (line: string) => void = console.log,
): Promise<number> {
  const [command, businessId, type, value] = args;
  if (!Uuid.safeParse(businessId).success) {
    print(USAGE);
    return 2;
  }
  const business = businessId!.toLowerCase();
  try {
    if (command === "audit") {
      const limit = Number(type ?? 20) || 20;
      for (const entry of await listAudit(deps.pool, business, limit)) print(JSON.stringify(entry));
      return 0;
    }
    const known = (TARGET_TYPES as readonly string[]).includes(type ?? "");
    if (!known || value === undefined || (command === "lift" && type === "contact_id")) {
      print(USAGE);
      return 2;
    }
    const country = await defaultCountry(deps.pool, business);
    if (country === undefined) {
      print(JSON.stringify({ ok: false, error: "no such business" }));
      return 1;
    }
    const target = normalizeTarget(type as TargetType, value, country);
    if (command === "erase") {
      const result = await erasePerson(deps.pool, { businessId: business, target, ...deps });
      print(
        JSON.stringify({
          ok: true,
          erasure_id: result.erasureId,
          contact_ids: result.contactIds,
          counts: result.counts,
        }),
      );
      return 0;
    }
    if (command === "lift") {
      const lifted = await liftSuppression(deps.pool, {
        businessId: business,
        target: target as Exclude<ErasureTarget, { type: "contact_id" }>,
        ...deps,
      });
      print(JSON.stringify({ ok: lifted > 0, lifted }));
      return lifted > 0 ? 0 : 1;
    }
  } catch (error) {
    if (error instanceof HttpError) {
      print(JSON.stringify({ ok: false, error: error.code, message: error.message }));
      return 1;
    }
    throw error;
  }
  print(USAGE);
  return 2;
}

async function defaultCountry(pool: Pool, businessId: string): Promise<string | undefined> {
  return transaction(
    pool,
    "erasure.business",
    async (client) => {
      const { rows } = await client.query<{ default_country: string }>(
        "SELECT default_country FROM businesses WHERE id = $1",
        [businessId],
      );
      return rows[0]?.default_country;
    },
    { businessId },
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const env = parseEnv(Env);
  const pool = createPool({ connectionString: env.DATABASE_URL, applicationName: "erasure-cli", max: 2 });
  try {
    process.exitCode = await runErasure(process.argv.slice(2), {
      pool,
      secret: env.ERASURE_HASH_SECRET,
      actor: `cli:${userInfo().username}`.slice(0, 200),
    });
  } finally {
    await pool.end();
  }
}
