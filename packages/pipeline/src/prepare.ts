import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnv, parseEnvFile } from "@crm/config";
import { migrate } from "@crm/infra/migrate";
import {
  kafkaIsAuthenticated,
  type StackSettings,
  stackIsUp,
  stackSettings,
  stackUp,
} from "@crm/infra/stack";
import { connectAuth, connectorSpec, registerConnector } from "@crm/outbox-connector";
import { registerTopicSchema, SchemaRegistryClient } from "@crm/schema-registry";
import { TOPIC_SCHEMAS } from "@crm/schemas";
import { z } from "zod";

const PipelineEnv = z.object({
  DATABASE_ADMIN_URL: z.string().url(),
  DATABASE_URL: z.string().url(),
  DEBEZIUM_DATABASE_URL: z.string().url(),
  // the ops console's role; migrate gives it its login (absent in endpoints made before it existed)
  CONSOLE_DATABASE_URL: z.string().url().optional(),
  CONNECT_URL: z.string().url(),
  SCHEMA_REGISTRY_URL: z.string().url(),
});

export interface PreparedPipeline {
  /** The endpoints the steps used: `<stack dir>/env`, or the `endpoints` passed in. */
  env: Record<string, string>;
  /** True when this call started the native stack (it was not up): whoever called it stops it when done. */
  startedStack: boolean;
}

/**
 * Makes everything the services need ready, in this process: the native stack up (unless `endpoints` are given,
 * or it is already up), the database migrated, the Debezium connector registered and RUNNING, and each topic's
 * value schema registered (fails when one is incompatible with the published one, SPEC 8). Safe to run again.
 * Used by `npm start`, the integration tests' global setup, bench and faults.
 */
export async function preparePipeline(
  options: {
    /** The native stack to use (default: the shared one, `.stack` or STACK_DIR). */
    settings?: StackSettings;
    /** Endpoints of a stack someone else runs (the environment's, compose's): no native stack then. */
    endpoints?: Record<string, string>;
    log?: (line: string) => void;
  } = {},
): Promise<PreparedPipeline> {
  const log = options.log ?? console.log;
  let env = options.endpoints;
  let startedStack = false;
  if (!env) {
    const s = options.settings ?? stackSettings();
    const wasUp = await stackIsUp(s);
    const written = wasUp ? parseEnvFile(readFileSync(join(s.dir, "env"), "utf8")) : {};
    // A running stack made before Kafka authentication goes through `up` too, which migrates it; so does one whose
    // env file predates a secret the services now require (ERASURE_HASH_SECRET, issue 18): `up` writes it.
    if (wasUp && kafkaIsAuthenticated(s) && written.ERASURE_HASH_SECRET) {
      env = written;
    } else {
      env = await stackUp(s, (line) => log(`[stack] ${line}`));
      startedStack = !wasUp;
    }
  }
  const endpoints = parseEnv(PipelineEnv, env);
  await migrate(endpoints, log);
  const spec = connectorSpec(endpoints.DEBEZIUM_DATABASE_URL);
  const action = await registerConnector(endpoints.CONNECT_URL, spec, { auth: connectAuth(env) });
  log(`[connector] ${spec.name} ${action}, RUNNING`);
  const registry = new SchemaRegistryClient(endpoints.SCHEMA_REGISTRY_URL);
  for (const topic of Object.keys(TOPIC_SCHEMAS)) {
    const id = await registerTopicSchema(registry, topic);
    log(`[schemas] ${topic}-value: id ${id}, compatibility BACKWARD`);
  }
  return { env, startedStack };
}
