import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseEnv } from "@crm/config";
import { createPool, type Pool, transaction } from "@crm/db";
import { cliRefusal } from "@crm/errors";
import { z } from "zod";
import {
  archiveSegment,
  createSegment,
  getSegment,
  isUuid,
  listSegments,
  type SegmentStatus,
  segmentVersions,
  updateSegment,
} from "./store.ts";

const USAGE = `usage: npm run segments -- <command>
  create  <business_id> <name> <definition>      definition: JSON text, or @file
  update  <business_id> <segment_id> [--name N] [--definition D] [--expected-version V]
  archive <business_id> <segment_id> [--expected-version V]
  list    <business_id> [active|archived|all]
  get     <business_id> <segment_id> [--versions]`;

const Env = z.object({ DATABASE_ADMIN_URL: z.string().url() });

const readDefinition = (text: string): unknown =>
  JSON.parse(text.startsWith("@") ? readFileSync(text.slice(1), "utf8") : text);

/**
 * Operator tool for segment definitions (issue 16.1), run with the admin role: the same checks and history as the
 * management API (@crm/segment-definitions), each statement scoped to the business named. Prints JSON, one
 * record per line. Returns the exit code: 0 done, 1 refused (the reason printed), 2 usage.
 */
export async function runSegments(args: string[], pool: Pool, print = console.log): Promise<number> {
  let parsed: ReturnType<typeof parseCommand>;
  try {
    parsed = parseCommand(args);
  } catch (error) {
    print(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  const { command, businessId, rest, options } = parsed;
  const expectedVersion =
    options["expected-version"] === undefined ? undefined : Number(options["expected-version"]);
  try {
    const result = await transaction(
      pool,
      `segments-cli.${command}`,
      async (client) => {
        switch (command) {
          case "create":
            if (rest.length !== 2) throw new Error("create takes a name and a definition");
            return createSegment(client, {
              businessId,
              name: rest[0],
              definition: readDefinition(rest[1]!),
              changedBy: null,
            });
          case "update":
            return updateSegment(client, {
              businessId,
              id: rest[0] ?? "",
              ...(options.name === undefined ? {} : { name: options.name }),
              ...(options.definition === undefined
                ? {}
                : { definition: readDefinition(options.definition as string) }),
              ...(expectedVersion === undefined ? {} : { expectedVersion }),
              changedBy: null,
            });
          case "archive":
            return archiveSegment(client, {
              businessId,
              id: rest[0] ?? "",
              ...(expectedVersion === undefined ? {} : { expectedVersion }),
              changedBy: null,
            });
          case "list":
            return listSegments(client, businessId, (rest[0] ?? "active") as SegmentStatus | "all");
          default:
            return options.versions
              ? segmentVersions(client, businessId, rest[0] ?? "")
              : getSegment(client, businessId, rest[0] ?? "");
        }
      },
      { businessId },
    );
    for (const record of Array.isArray(result) ? result : [result]) print(JSON.stringify(record));
    return 0;
  } catch (error) {
    const refusal = cliRefusal(error, businessId);
    if (refusal === undefined) throw error;
    print(refusal);
    return 1;
  }
}

function parseCommand(args: string[]) {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      name: { type: "string" },
      definition: { type: "string" },
      "expected-version": { type: "string" },
      versions: { type: "boolean" },
    },
  });
  const [command, businessId, ...rest] = positionals;
  if (!command || !["create", "update", "archive", "list", "get"].includes(command)) {
    throw new Error(`unknown command ${command ?? "(none)"}`);
  }
  if (!isUuid(businessId)) throw new Error("business_id must be a uuid");
  if (command === "list" && rest[0] !== undefined && !["active", "archived", "all"].includes(rest[0])) {
    throw new Error("list takes active, archived or all");
  }
  const version = values["expected-version"];
  if (version !== undefined && !/^[1-9]\d{0,8}$/.test(version))
    throw new Error("--expected-version is a version");
  return { command, businessId, rest, options: values };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const env = parseEnv(Env);
  const pool = createPool({
    connectionString: env.DATABASE_ADMIN_URL,
    applicationName: "segments-cli",
    max: 1,
  });
  try {
    process.exitCode = await runSegments(process.argv.slice(2), pool);
  } finally {
    await pool.end();
  }
}
