import { parseEnv } from "@crm/config";
import pg from "pg";
import { z } from "zod";

/**
 * Operator tool for the messages the Segment-compatible listener refused one by one (issue 15), run with the admin
 * role (it reads across businesses):
 *   npm run rejected-events -- counts [business_id]        per business and reason, over the retention
 *   npm run rejected-events -- list <business_id> [limit]  the latest (default 20): when, messageId, reason, message
 */
const Env = z.object({ DATABASE_ADMIN_URL: z.string().url() });
const Uuid = z.uuid();

export async function runRejectedEvents(
  args: string[],
  db: pg.Pool | pg.ClientBase,
  print = console.log,
): Promise<number> {
  const [command, id, limit] = args;
  const usage = "usage: rejected-events counts [business_id] | list <business_id> [limit]";
  if (command === "counts" && (id === undefined || Uuid.safeParse(id).success)) {
    const { rows } = await db.query(
      `SELECT business_id, reason_code, count(*)::int AS rejected, max(received_at) AS latest
       FROM rejected_events WHERE $1::uuid IS NULL OR business_id = $1::uuid
       GROUP BY business_id, reason_code ORDER BY business_id, reason_code`,
      [id ?? null],
    );
    for (const row of rows) print(JSON.stringify(row));
    return 0;
  }
  if (command === "list" && Uuid.safeParse(id).success) {
    const count = Math.min(Math.max(Number(limit ?? 20) || 20, 1), 1_000);
    const { rows } = await db.query(
      `SELECT received_at, source, message_id, reason_code, reason, message FROM rejected_events
       WHERE business_id = $1 ORDER BY received_at DESC LIMIT $2`,
      [id, count],
    );
    for (const row of rows) print(JSON.stringify(row));
    return 0;
  }
  print(usage);
  return 2;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const env = parseEnv(Env);
  const client = new pg.Client({
    connectionString: env.DATABASE_ADMIN_URL,
    application_name: "rejected-events",
  });
  await client.connect();
  try {
    process.exitCode = await runRejectedEvents(process.argv.slice(2), client);
  } finally {
    await client.end();
  }
}
