import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseEnv } from "@crm/config";
import { createPool, type Pool, transaction } from "@crm/db";
import { cliRefusal, HttpError } from "@crm/errors";
import { z } from "zod";
import { CreateEndpointBody, CreateTriggerBody, DeliveryStatus, invalidRequest } from "./definitions.ts";
import {
  createEndpoint,
  createTrigger,
  deleteEndpoint,
  deleteTrigger,
  getDelivery,
  listDeliveries,
  listEndpoints,
  listTriggers,
  replayDelivery,
  rotateEndpointSecret,
  updateEndpoint,
  updateTrigger,
} from "./store.ts";
import { deploymentKey } from "./webhook-secret.ts";

const USAGE = `usage: npm run automations -- <command>
  endpoints create  <business_id> <url> [--types contact.created,...] [--description D]   prints the secret once
  endpoints list    <business_id>
  endpoints rotate  <business_id> <endpoint_id> [--overlap-seconds N]                      prints the new secret
  endpoints enable|disable|delete <business_id> <endpoint_id>
  triggers  create  <business_id> <name> <on> [--filter F] [--once] [--delay-seconds N]    on, filter: JSON or @file
  triggers  list    <business_id>
  triggers  enable|disable|delete <business_id> <trigger_id>
  deliveries list   <business_id> [--status pending|succeeded|failed|all] [--endpoint ID] [--trigger ID] [--limit N]
  deliveries get    <business_id> <delivery_id>                                           with every attempt
  deliveries replay <business_id> <delivery_id>`;

const Env = z.object({
  DATABASE_ADMIN_URL: z.string().url(),
  AUTOMATIONS_SECRET_KEY: z.string().min(1).optional(),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const json = (text: string): unknown =>
  JSON.parse(text.startsWith("@") ? readFileSync(text.slice(1), "utf8") : text);
const parsed = <T extends z.ZodType>(schema: T, value: unknown): z.infer<T> => {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw invalidRequest(result.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })));
};

/**
 * Operator tool for automations (issue 17), run with the admin role: the same checks as the management API
 * (@crm/automations), each statement scoped to the business named. Prints JSON, one record per line. Returns the
 * exit code: 0 done, 1 refused (the reason printed), 2 usage.
 */
export async function runAutomations(
  args: string[],
  pool: Pool,
  secretKey: Buffer | undefined,
  print = console.log,
): Promise<number> {
  let command: ReturnType<typeof parseCommand>;
  try {
    command = parseCommand(args);
  } catch (error) {
    print(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  const { area, verb, businessId, rest, options } = command;
  const key = () => {
    if (!secretKey) throw new HttpError(503, "unavailable", "AUTOMATIONS_SECRET_KEY is not set");
    return secretKey;
  };
  try {
    const result = await transaction(
      pool,
      `automations-cli.${area}.${verb}`,
      async (client): Promise<unknown> => {
        const id = rest[0] ?? "";
        if (area === "endpoints") {
          switch (verb) {
            case "create": {
              const body = parsed(CreateEndpointBody, {
                url: rest[0] ?? "",
                ...(options.types ? { event_types: String(options.types).split(",") } : {}),
                ...(options.description ? { description: options.description } : {}),
              });
              return createEndpoint(client, key(), businessId, body);
            }
            case "list":
              return listEndpoints(client, businessId);
            case "rotate":
              return rotateEndpointSecret(
                client,
                key(),
                businessId,
                id,
                options["overlap-seconds"] === undefined ? 24 * 3600 : Number(options["overlap-seconds"]),
              );
            case "enable":
            case "disable":
              return updateEndpoint(client, businessId, id, { enabled: verb === "enable" });
            case "delete":
              await deleteEndpoint(client, businessId, id);
              return { ok: true, deleted: id };
          }
        }
        if (area === "triggers") {
          switch (verb) {
            case "create": {
              const body = parsed(CreateTriggerBody, {
                name: rest[0] ?? "",
                on: json(rest[1] ?? "null"),
                ...(options.filter ? { contact_filter: json(String(options.filter)) } : {}),
                ...(options.once ? { once_per_contact: true } : {}),
                ...(options["delay-seconds"] ? { delay_seconds: Number(options["delay-seconds"]) } : {}),
              });
              return createTrigger(client, businessId, body);
            }
            case "list":
              return listTriggers(client, businessId);
            case "enable":
            case "disable":
              return updateTrigger(client, businessId, id, { enabled: verb === "enable" });
            case "delete":
              await deleteTrigger(client, businessId, id);
              return { ok: true, deleted: id };
          }
        }
        switch (verb) {
          case "list":
            return listDeliveries(client, businessId, {
              status: parsed(DeliveryStatus, options.status ?? "all"),
              ...(options.endpoint ? { endpointId: String(options.endpoint) } : {}),
              ...(options.trigger ? { triggerId: String(options.trigger) } : {}),
              limit: options.limit === undefined ? 50 : Number(options.limit),
            });
          case "get":
            return getDelivery(client, businessId, id);
          case "replay":
            return replayDelivery(client, businessId, id);
        }
        throw new HttpError(400, "invalid_request", `unknown command ${area} ${verb}`);
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

const VERBS: Record<string, string[]> = {
  endpoints: ["create", "list", "rotate", "enable", "disable", "delete"],
  triggers: ["create", "list", "enable", "disable", "delete"],
  deliveries: ["list", "get", "replay"],
};

function parseCommand(args: string[]) {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      types: { type: "string" },
      description: { type: "string" },
      "overlap-seconds": { type: "string" },
      filter: { type: "string" },
      once: { type: "boolean" },
      "delay-seconds": { type: "string" },
      status: { type: "string" },
      endpoint: { type: "string" },
      trigger: { type: "string" },
      limit: { type: "string" },
    },
  });
  const [area, verb, businessId, ...rest] = positionals;
  if (!area || !VERBS[area]) throw new Error(`unknown area ${area ?? "(none)"}`);
  if (!verb || !VERBS[area]!.includes(verb)) throw new Error(`unknown command ${area} ${verb ?? "(none)"}`);
  if (!businessId || !UUID.test(businessId)) throw new Error("business_id must be a uuid");
  for (const name of ["overlap-seconds", "delay-seconds", "limit"] as const) {
    const value = values[name];
    if (value !== undefined && !/^\d{1,9}$/.test(value)) throw new Error(`--${name} is a number`);
  }
  return { area, verb, businessId: businessId.toLowerCase(), rest, options: values };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const env = parseEnv(Env);
  const pool = createPool({
    connectionString: env.DATABASE_ADMIN_URL,
    applicationName: "automations-cli",
    max: 1,
  });
  try {
    const key = env.AUTOMATIONS_SECRET_KEY ? deploymentKey(env.AUTOMATIONS_SECRET_KEY) : undefined;
    process.exitCode = await runAutomations(process.argv.slice(2), pool, key);
  } finally {
    await pool.end();
  }
}
