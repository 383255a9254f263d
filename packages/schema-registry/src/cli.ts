import { parseEnv } from "@crm/config";
import { TOPIC_SCHEMAS } from "@crm/schemas";
import { z } from "zod";
import { SchemaRegistryClient } from "./client.ts";
import { checkTopicSchema, registerTopicSchema } from "./compatibility.ts";

// npm run schemas -- check|register [topic...]
//   check:    exit 1 when a schema in schemas/ is incompatible with what the registry holds (CI runs this)
//   register: check, then register each under <topic>-value with BACKWARD compatibility
const Env = z.object({
  // Confluent-compatible registry API, e.g. http://127.0.0.1:8081/apis/ccompat/v7
  SCHEMA_REGISTRY_URL: z.string().url(),
});

async function main(): Promise<number> {
  const env = parseEnv(Env);
  const [command = "check", ...named] = process.argv.slice(2);
  const topics = named.length > 0 ? named : Object.keys(TOPIC_SCHEMAS);
  const client = new SchemaRegistryClient(env.SCHEMA_REGISTRY_URL);
  if (command !== "check" && command !== "register") {
    console.error("usage: npm run schemas -- check|register [topic...]");
    return 2;
  }
  let failed = false;
  for (const topic of topics) {
    const schema = TOPIC_SCHEMAS[topic as keyof typeof TOPIC_SCHEMAS];
    if (!schema) {
      console.error(`[schemas] ${topic}: no schema in schemas/`);
      failed = true;
      continue;
    }
    const check = await checkTopicSchema(client, topic, schema);
    const at = check.latestVersion ? ` (latest v${check.latestVersion})` : "";
    console.log(`[schemas] ${check.subject}: ${check.status}${at}`);
    for (const message of check.messages) console.log(`[schemas]   ${message}`);
    if (check.status === "incompatible") {
      failed = true;
      continue;
    }
    if (command === "register") {
      const id = await registerTopicSchema(client, topic, schema);
      console.log(`[schemas] ${check.subject}: registered, id ${id}, compatibility BACKWARD`);
    }
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`[schemas] ${(error as Error).message}`);
    process.exit(1);
  },
);
