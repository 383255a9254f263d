import { randomBytes } from "node:crypto";
import { parseEnv } from "@crm/config";
import pg from "pg";
import { z } from "zod";
import { hashIngestKey } from "./auth.ts";

/**
 * Operator tool for ingest keys (SPEC 4), run with the admin role:
 *   npm run ingest-keys -- create <business_id> [label]   prints the new key once; only its hash is stored
 *   npm run ingest-keys -- list <business_id>             ids, labels, dates (never keys)
 *   npm run ingest-keys -- revoke <key_id>                the key stops working within the 30 s cache window
 */
const Env = z.object({ DATABASE_ADMIN_URL: z.string().url() });
const Uuid = z.uuid();

export function newIngestKey(): string {
  return `ik_${randomBytes(32).toString("base64url")}`;
}

export async function runIngestKeys(
  args: string[],
  db: pg.Pool | pg.ClientBase,
  print = console.log,
): Promise<number> {
  const [command, id, label] = args;
  if (!command || !["create", "list", "revoke"].includes(command) || !Uuid.safeParse(id).success) {
    print("usage: ingest-keys create <business_id> [label] | list <business_id> | revoke <key_id>");
    return 2;
  }
  if (command === "create") {
    const key = newIngestKey();
    const { rows } = await db.query<{ id: string }>(
      "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, $2, $3) RETURNING id",
      [id, hashIngestKey(key), label ?? null],
    );
    print(`key id: ${rows[0]!.id}`);
    print(`ingest key (shown once, store it now): ${key}`);
    return 0;
  }
  if (command === "list") {
    const { rows } = await db.query(
      "SELECT id, label, created_at, revoked_at FROM ingest_keys WHERE business_id = $1 ORDER BY created_at",
      [id],
    );
    for (const row of rows) print(JSON.stringify(row));
    return 0;
  }
  const { rowCount } = await db.query(
    "UPDATE ingest_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    [id],
  );
  print(rowCount ? `revoked ${id}` : `no active key ${id}`);
  return rowCount ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const env = parseEnv(Env);
  const client = new pg.Client({ connectionString: env.DATABASE_ADMIN_URL, application_name: "ingest-keys" });
  await client.connect();
  try {
    process.exitCode = await runIngestKeys(process.argv.slice(2), client);
  } finally {
    await client.end();
  }
}
