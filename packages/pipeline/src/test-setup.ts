import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { repoRoot, stackEnv } from "@crm/config";
import { preparePipeline } from "./prepare.ts";

/**
 * The integration tests' vitest globalSetup: chooses their stack in one place, then prepares the pipeline on it:
 *  1. endpoints already in the environment (KAFKA_BROKERS and DATABASE_ADMIN_URL set): use them as they are;
 *  2. a Docker engine answers: the containers of docker-compose.yml, through testcontainers;
 *  3. otherwise the native stack (`.stack`), started unless it is up.
 * The endpoints are exported to the test workers (variables already set win).
 */
export default async function setup(): Promise<() => Promise<void>> {
  let teardown = async () => {};
  let endpoints: Record<string, string> | undefined;
  if (process.env.KAFKA_BROKERS && process.env.DATABASE_ADMIN_URL) {
    console.log("[tests] using endpoints from the environment");
    endpoints = definedOnly(stackEnv());
  } else if (dockerAnswers()) {
    teardown = await startCompose(repoRoot());
    endpoints = definedOnly(stackEnv());
  }
  const { env } = await preparePipeline({ endpoints });
  Object.assign(process.env, env, process.env);
  return teardown;
}

function definedOnly(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => !!entry[1]));
}

function dockerAnswers(): boolean {
  if (process.env.CRM_TESTS_NO_DOCKER === "1") return false;
  const probe = spawnSync("docker", ["info", "--format", "{{.ServerVersion}}"], {
    stdio: "ignore",
    timeout: 5_000,
  });
  return probe.status === 0;
}

async function startCompose(root: string): Promise<() => Promise<void>> {
  if (!existsSync(join(root, "docker-compose.yml"))) throw new Error("docker-compose.yml missing");
  const { DockerComposeEnvironment, Wait } = await import("testcontainers");
  console.log("[tests] Docker engine found: starting docker-compose.yml with testcontainers");
  // The same secrets a developer gets from `npm run stack -- compose-env` (.env, created once, then kept).
  const { composeEndpoints, writeComposeEnv } = await import("@crm/infra/stack");
  const endpoints = composeEndpoints(writeComposeEnv(root));
  const environment = await new DockerComposeEnvironment(root, "docker-compose.yml")
    .withWaitStrategy(
      "connect-1",
      Wait.forHttp("/connectors", 8083).withBasicCredentials(
        endpoints.CONNECT_USERNAME!,
        endpoints.CONNECT_PASSWORD!,
      ),
    )
    .up();
  Object.assign(process.env, { ...endpoints, ...process.env });
  return async () => {
    await environment.down();
  };
}
