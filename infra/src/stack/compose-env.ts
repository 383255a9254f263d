import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnvFile } from "@crm/config";
import { DEFAULT_EVENT_RETENTION_MS, KAFKA_PRINCIPALS, pipelineTopics } from "@crm/kafka";
import { kafkaGrants } from "./kafka-auth.ts";
import { scramVerifier } from "./scram.ts";
import { CONNECT_REST_USER, ROLES } from "./secrets.ts";
import { stackSettings } from "./settings.ts";

/**
 * docker-compose.yml's secrets (issue 14.5): `npm run stack -- compose-env` writes them into `.env` beside it
 * (0600, git-ignored), once; compose refuses to start without them. The same principals and roles as the native
 * stack, with the same ACLs (infra/compose/kafka-acls.sh, generated from kafkaGrants and checked by compose.test).
 */
const SECRET_NAMES = [
  "POSTGRES_PASSWORD",
  "CRM_SERVICE_PASSWORD",
  "CRM_DEBEZIUM_PASSWORD",
  "CRM_REGISTRY_PASSWORD",
  "CRM_CONSOLE_PASSWORD",
  "JWT_SECRET",
  "LOG_HASH_SECRET",
  "ERASURE_HASH_SECRET",
  "CONNECT_PASSWORD",
  "CONSOLE_OPERATOR_TOKEN",
  "CONSOLE_SESSION_SECRET",
  "KAFKA_BROKER_PASSWORD",
  ...Object.values(KAFKA_PRINCIPALS).map((prefix) => `KAFKA_${prefix}_PASSWORD`),
];

/** Creates `.env` or adds the secrets it lacks; returns its variables. Existing values are never replaced. */
export function writeComposeEnv(root: string): Record<string, string> {
  const file = join(root, ".env");
  // Values are single-quoted: compose takes them literally (a SCRAM verifier holds `$`).
  const existing = Object.fromEntries(
    Object.entries(existsSync(file) ? parseEnvFile(readFileSync(file, "utf8")) : {}).map(([key, value]) => [
      key,
      value.replace(/^'(.*)'$/, "$1"),
    ]),
  );
  const env: Record<string, string> = { ...existing };
  for (const name of SECRET_NAMES) env[name] ??= randomBytes(24).toString("base64url");
  // an AES-256 key (services/automations seals webhook secrets with it)
  env.AUTOMATIONS_SECRET_KEY ??= randomBytes(32).toString("base64url");
  // The registry role is created by Postgres's init script, which must not see the password itself.
  if (!existing.CRM_REGISTRY_PASSWORD_VERIFIER || !existing.CRM_REGISTRY_PASSWORD) {
    env.CRM_REGISTRY_PASSWORD_VERIFIER = scramVerifier(env.CRM_REGISTRY_PASSWORD!);
  }
  const text = Object.entries(env)
    .map(([key, value]) => `${key}='${value}'`)
    .join("\n");
  writeFileSync(
    file,
    `# written by npm run stack -- compose-env; secrets of docker-compose.yml, never commit\n${text}\n`,
    {
      mode: 0o600,
    },
  );
  return env;
}

/** The `.stack/env` variables for the compose stack's published (loopback) ports. */
export function composeEndpoints(env: Record<string, string>): Record<string, string> {
  const s = stackSettings({});
  const pg = (user: string, password: string) => `postgres://${user}:${password}@127.0.0.1:${s.pgPort}/crm`;
  const kafka: Record<string, string> = {};
  for (const [principal, prefix] of Object.entries(KAFKA_PRINCIPALS)) {
    kafka[`KAFKA_${prefix}_USERNAME`] = principal;
    kafka[`KAFKA_${prefix}_PASSWORD`] = env[`KAFKA_${prefix}_PASSWORD`]!;
  }
  return {
    DATABASE_URL: pg(ROLES.service, env.CRM_SERVICE_PASSWORD!),
    DATABASE_ADMIN_URL: pg("postgres", env.POSTGRES_PASSWORD!),
    DEBEZIUM_DATABASE_URL: pg(ROLES.debezium, env.CRM_DEBEZIUM_PASSWORD!),
    CONSOLE_DATABASE_URL: pg(ROLES.console, env.CRM_CONSOLE_PASSWORD!),
    KAFKA_BROKERS: `127.0.0.1:${s.kafkaPort}`,
    ...kafka,
    CONNECT_URL: `http://127.0.0.1:${s.connectPort}`,
    CONNECT_USERNAME: CONNECT_REST_USER,
    CONNECT_PASSWORD: env.CONNECT_PASSWORD!,
    SCHEMA_REGISTRY_URL: `http://127.0.0.1:${s.registryPort}/apis/ccompat/v7`,
    JWT_SECRET: env.JWT_SECRET!,
    LOG_HASH_SECRET: env.LOG_HASH_SECRET!,
    CONSOLE_OPERATOR_TOKEN: env.CONSOLE_OPERATOR_TOKEN!,
    CONSOLE_SESSION_SECRET: env.CONSOLE_SESSION_SECRET!,
    ERASURE_HASH_SECRET: env.ERASURE_HASH_SECRET!,
  };
}

const OPERATION_NAMES: Record<number, string> = {
  2: "All",
  3: "Read",
  4: "Write",
  5: "Create",
  6: "Delete",
  8: "Describe",
  10: "DescribeConfigs",
  12: "IdempotentWrite",
};

/**
 * The topics and ACLs of compose's kafka-init, as `kafka-topics.sh` and `kafka-acls.sh` lines: the native stack's
 * (pipelineTopics, kafkaGrants for Connect's default group), so compose cannot drift from it.
 */
export function composeKafkaInitScript(): string {
  const s = { ...stackSettings({}), connectGroup: "crm-connect" };
  const admin = "--bootstrap-server kafka:29092 --command-config /tmp/admin.properties";
  const lines = [
    "#!/bin/sh",
    "# Generated from infra/src/stack/kafka-auth.ts (kafkaGrants) by composeKafkaInitScript; compose.test checks it.",
    "set -eu",
    'printf \'security.protocol=SASL_PLAINTEXT\\nsasl.mechanism=SCRAM-SHA-512\\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\\n\' "$KAFKA_ADMIN_PASSWORD" > /tmp/admin.properties',
    // EVENT_RETENTION_MS (compose environment, default 7 days): retention of the topics holding raw events
    'RETENTION_MS="${EVENT_RETENTION_MS:-' + String(DEFAULT_EVENT_RETENTION_MS) + '}"',
    ...pipelineTopics(s.partitions).map(({ topic, configEntries }) =>
      configEntries
        ? `/opt/kafka/bin/kafka-topics.sh ${admin} --create --if-not-exists --topic ${topic} --partitions ${s.partitions} --replication-factor 1 --config retention.ms="$RETENTION_MS"\n` +
          `/opt/kafka/bin/kafka-configs.sh ${admin} --alter --entity-type topics --entity-name ${topic} --add-config retention.ms="$RETENTION_MS"`
        : `/opt/kafka/bin/kafka-topics.sh ${admin} --create --if-not-exists --topic ${topic} --partitions ${s.partitions} --replication-factor 1`,
    ),
  ];
  for (const grant of kafkaGrants(s)) {
    const resource =
      grant.resourceType === 2
        ? `--topic '${grant.resourceName}'`
        : grant.resourceType === 3
          ? `--group '${grant.resourceName}'`
          : "--cluster";
    const pattern = grant.pattern === 4 ? " --resource-pattern-type prefixed" : "";
    const who = `${grant.permission === "deny" ? "--deny-principal" : "--allow-principal"} User:${grant.principal}`;
    const operations = grant.operations.map((op) => `--operation ${OPERATION_NAMES[op]}`).join(" ");
    lines.push(`/opt/kafka/bin/kafka-acls.sh ${admin} --add ${who} ${operations} ${resource}${pattern}`);
  }
  return `${lines.join("\n")}\n`;
}
