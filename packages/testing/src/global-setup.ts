import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnvFile, repoRoot, stackDir } from "@crm/config";

/**
 * Chooses the environment of the integration tests, in one place:
 *  1. endpoints already in the environment (KAFKA_BROKERS and DATABASE_ADMIN_URL set): use them as they are;
 *  2. a Docker engine answers: the containers of docker-compose.yml, through testcontainers;
 *  3. otherwise the native launcher (`npm run stack -- up`), which is idempotent and quick when already up.
 * Then the schema is migrated, the Debezium connector registered and the topic schemas registered (idempotent).
 */
export default async function setup(): Promise<() => Promise<void>> {
  const root = repoRoot();
  let teardown = async () => {};
  if (process.env.KAFKA_BROKERS && process.env.DATABASE_ADMIN_URL) {
    console.log("[tests] using endpoints from the environment");
  } else if (dockerAnswers()) {
    teardown = await startCompose(root);
  } else {
    run(root, ["run", "stack", "--", "up"]);
    Object.assign(process.env, parseEnvFile(readFileSync(join(stackDir(), "env"), "utf8")), process.env);
  }
  run(root, ["run", "migrate"]);
  run(root, ["run", "connector", "--", "register"]);
  // Fails the run when a schema in schemas/ is incompatible with the published one (BACKWARD, SPEC 8).
  run(root, ["run", "schemas", "--", "register"]);
  return teardown;
}

function run(cwd: string, args: string[]): void {
  const result = spawnSync("npm", args, { cwd, stdio: "inherit", env: process.env });
  if (result.status !== 0) throw new Error(`npm ${args.join(" ")} failed (exit ${result.status})`);
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
  const environment = await new DockerComposeEnvironment(root, "docker-compose.yml")
    .withWaitStrategy("connect-1", Wait.forHttp("/connectors", 8083))
    .up();
  Object.assign(process.env, {
    DATABASE_URL: "postgres://crm_service:crm_service_dev@127.0.0.1:55432/crm",
    DATABASE_ADMIN_URL: "postgres://postgres:postgres@127.0.0.1:55432/crm",
    DEBEZIUM_DATABASE_URL: "postgres://crm_debezium:crm_debezium_dev@127.0.0.1:55432/crm",
    KAFKA_BROKERS: "127.0.0.1:9092",
    CONNECT_URL: "http://127.0.0.1:8083",
    SCHEMA_REGISTRY_URL: "http://127.0.0.1:8081/apis/ccompat/v7",
    JWT_SECRET: "compose-dev-jwt-secret-0123456789",
    LOG_HASH_SECRET: "compose-dev-log-hash-secret-0123",
    ...process.env,
  });
  return async () => {
    await environment.down();
  };
}
