import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stackEnv } from "@crm/config";
import {
  AclPermissionTypes,
  type Admin,
  KAFKA_PRINCIPALS,
  type KafkaCredentials,
  type KafkaPrincipal,
  kafkaCredentials,
  AclOperationTypes as Op,
  ResourcePatternTypes as Pattern,
  AclResourceTypes as Res,
  TOPICS,
} from "@crm/kafka";
import type { StackSettings } from "./settings.ts";

/**
 * Kafka authentication of the native stack (SPEC section 11, "Kafka principals"): SCRAM-SHA-512 on the broker
 * listener for every client and between brokers, PLAIN on the controller listener (KRaft controllers cannot check
 * SCRAM: its credentials live in the metadata they serve), StandardAuthorizer with no access unless an ACL grants it.
 */

/** Principals of the stack: the clients' eight, plus `broker` for the nodes themselves (inter-broker, controller). */
export type StackPrincipal = KafkaPrincipal | "broker";

export type KafkaSecrets = Record<StackPrincipal, string>;

const PRINCIPALS: StackPrincipal[] = [...(Object.keys(KAFKA_PRINCIPALS) as KafkaPrincipal[]), "broker"];

/** The mechanism every client uses, in Java's spelling. */
export const SCRAM = "SCRAM-SHA-512";

/** Marks a stack dir whose Kafka was formatted with the SCRAM users (a dir without it predates authentication). */
export const KAFKA_AUTH_MARKER = "kafka-auth";

/** False for a stack dir made before authentication: its next `stack up` migrates it (stack.ts). */
export function kafkaIsAuthenticated(s: StackSettings): boolean {
  return existsSync(join(s.dir, KAFKA_AUTH_MARKER));
}

/** Passwords are URL-safe base64, so they need no quoting in JAAS, `--add-scram` or a URL. */
function newPassword(): string {
  return randomBytes(24).toString("base64url");
}

/**
 * The Kafka passwords of a stack, generated on its first `up` into `<dir>/kafka-secrets.json` (0600) and kept:
 * the SCRAM users are written into the metadata at format time, so a new password needs a rotation (README).
 */
export function kafkaSecrets(s: StackSettings): KafkaSecrets {
  const file = join(s.dir, "kafka-secrets.json");
  const stored: Partial<KafkaSecrets> = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
  const missing = PRINCIPALS.filter((p) => !stored[p]);
  if (missing.length === 0) return stored as KafkaSecrets;
  const secrets = { ...stored } as KafkaSecrets;
  for (const p of missing) secrets[p] = newPassword();
  writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  return secrets;
}

const SCRAM_USERS_FILE = "kafka-scram-users";

/**
 * Principals whose SCRAM user the stack's metadata holds: every principal of the format, then each one added on a
 * later `up` (a stack formatted before the second wave's services has only the first six).
 */
export function scramUsersOf(s: StackSettings): StackPrincipal[] {
  const file = join(s.dir, SCRAM_USERS_FILE);
  if (existsSync(file)) return readFileSync(file, "utf8").split("\n").filter(Boolean) as StackPrincipal[];
  return ["admin", "ingest-api", "resolver-worker", "connect", "consumer", "broker"];
}

export function recordScramUsers(s: StackSettings, users: StackPrincipal[]): void {
  writeFileSync(join(s.dir, SCRAM_USERS_FILE), `${users.join("\n")}\n`);
}

/** Principals of this code that the stack's metadata does not hold yet. */
export function missingScramUsers(s: StackSettings): StackPrincipal[] {
  const present = new Set(scramUsersOf(s));
  return PRINCIPALS.filter((p) => !present.has(p));
}

/** `kafka-configs --alter` arguments that add a principal's SCRAM user to a running cluster. */
export function addScramUserArgs(secrets: KafkaSecrets, principal: StackPrincipal): string[] {
  return [
    "--alter",
    "--add-config",
    `${SCRAM}=[iterations=4096,password=${secrets[principal]}]`,
    "--entity-type",
    "users",
    "--entity-name",
    principal,
  ];
}

/** A principal's credentials; its user name is the principal name. */
export function credentialsOf(secrets: KafkaSecrets, principal: StackPrincipal): KafkaCredentials {
  return { username: principal, password: secrets[principal] };
}

/**
 * The Connect worker's credentials for a Connect started on another stack's Kafka (a test's private worker whose
 * dir holds no Kafka): that stack's `.stack/env`, or none when it runs without authentication.
 */
export function connectCredentials(s: StackSettings): KafkaCredentials | undefined {
  if (existsSync(join(s.dir, "kafka-secrets.json"))) return credentialsOf(kafkaSecrets(s), "connect");
  return kafkaCredentials(stackEnv(), "connect");
}

/** `.stack/env` lines: each principal's user name and password. */
export function kafkaEnv(secrets: KafkaSecrets): Record<string, string> {
  const env: Record<string, string> = { KAFKA_SASL_MECHANISM: SCRAM };
  for (const [principal, prefix] of Object.entries(KAFKA_PRINCIPALS)) {
    env[`KAFKA_${prefix}_USERNAME`] = principal;
    env[`KAFKA_${prefix}_PASSWORD`] = secrets[principal as KafkaPrincipal];
  }
  return env;
}

/** `kafka-storage format` arguments that create every SCRAM user in the bootstrap metadata. */
export function addScramArgs(secrets: KafkaSecrets): string[] {
  return PRINCIPALS.flatMap((p) => ["--add-scram", `${SCRAM}=[name=${p},password=${secrets[p]}]`]);
}

const scramJaas = (c: KafkaCredentials) =>
  `org.apache.kafka.common.security.scram.ScramLoginModule required username="${c.username}" password="${c.password}";`;

/** The listener, SASL and authorizer lines of a node's server.properties. */
export function brokerAuthProperties(secrets: KafkaSecrets): string[] {
  const broker = credentialsOf(secrets, "broker");
  return [
    "listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
    "inter.broker.listener.name=BROKER",
    `sasl.mechanism.inter.broker.protocol=${SCRAM}`,
    "sasl.mechanism.controller.protocol=PLAIN",
    `listener.name.broker.sasl.enabled.mechanisms=${SCRAM}`,
    `listener.name.broker.scram-sha-512.sasl.jaas.config=${scramJaas(broker)}`,
    "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
    `listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="${broker.password}" user_broker="${broker.password}";`,
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found=false",
    // The nodes themselves and the tools' admin; every other principal gets only its ACLs below.
    "super.users=User:broker;User:admin",
  ];
}

/** Client properties for a Java client (Connect), with `prefix` for its producer./consumer./admin. clients. */
export function javaClientAuthProperties(c: KafkaCredentials, prefix = ""): string[] {
  return [
    `${prefix}security.protocol=SASL_PLAINTEXT`,
    `${prefix}sasl.mechanism=${SCRAM}`,
    `${prefix}sasl.jaas.config=${scramJaas(c)}`,
  ];
}

interface Grant {
  principal: KafkaPrincipal;
  resourceType: number;
  resourceName: string;
  pattern: number;
  operations: number[];
  permission?: "allow" | "deny";
}

const topicPrefix = (principal: KafkaPrincipal, name: string, operations: number[]): Grant => ({
  principal,
  resourceType: Res.TOPIC,
  resourceName: name,
  pattern: Pattern.PREFIXED,
  operations,
});

/**
 * Who may do what. Topics are granted by prefix, so the copies that tests and the bench make of a topic
 * (`events.raw.v1.bench-<run>`, `events.raw.v1.test-<id>`) carry the same rules as the topic. Consumer groups are
 * open to the two consuming principals (tests and the bench pick their own group names), since a group alone reads
 * nothing; but the consumer principal may not join the worker's or Connect's groups, where it could stall them.
 */
export function kafkaGrants(s: StackSettings): Grant[] {
  const connectTopics = ["_connect-", `_${s.connectGroup}`, "_crm-connect", "__debezium-heartbeat"];
  const group = (principal: KafkaPrincipal, name: string, pattern: number, permission?: "deny"): Grant => ({
    principal,
    resourceType: Res.GROUP,
    resourceName: name,
    pattern,
    operations: [Op.READ, Op.DESCRIBE],
    permission,
  });
  const idempotent = (principal: KafkaPrincipal): Grant => ({
    principal,
    resourceType: Res.CLUSTER,
    resourceName: "kafka-cluster",
    pattern: Pattern.LITERAL,
    operations: [Op.IDEMPOTENT_WRITE],
  });
  return [
    topicPrefix("ingest-api", TOPICS.raw, [Op.WRITE, Op.DESCRIBE]),
    idempotent("ingest-api"),
    topicPrefix("resolver-worker", TOPICS.raw, [Op.READ, Op.DESCRIBE]),
    topicPrefix("resolver-worker", TOPICS.dlq, [Op.WRITE, Op.DESCRIBE]),
    group("resolver-worker", "*", Pattern.LITERAL),
    idempotent("resolver-worker"),
    ...connectTopics.map((name) => topicPrefix("connect", name, [Op.ALL])),
    // The connector's output, the copies the connector tests route to, and Debezium's own topics (changes of
    // the heartbeat table under its topic.prefix: "crm", "crmtest<id>" for the tests' copies).
    ...[
      TOPICS.contactUpdated,
      TOPICS.eventsApplied,
      TOPICS.segmentMembership,
      "test.contact.updated.",
      "crm.",
      "crmtest",
    ].map((name) => topicPrefix("connect", name, [Op.WRITE, Op.DESCRIBE, Op.CREATE, Op.DESCRIBE_CONFIGS])),
    group("connect", "crm-connect", Pattern.PREFIXED),
    group("connect", s.connectGroup, Pattern.LITERAL),
    idempotent("connect"),
    {
      principal: "connect",
      resourceType: Res.CLUSTER,
      resourceName: "kafka-cluster",
      pattern: Pattern.LITERAL,
      operations: [Op.DESCRIBE, Op.DESCRIBE_CONFIGS],
    },
    {
      principal: "consumer",
      resourceType: Res.TOPIC,
      resourceName: TOPICS.contactUpdated,
      pattern: Pattern.LITERAL,
      operations: [Op.READ, Op.DESCRIBE],
    },
    // The second wave's services (SPEC section 11): each reads its own inputs, in groups named after itself.
    ...[TOPICS.contactUpdated, TOPICS.eventsApplied].map((name) =>
      topicPrefix("segments", name, [Op.READ, Op.DESCRIBE]),
    ),
    group("segments", "segments", Pattern.PREFIXED),
    ...[TOPICS.contactUpdated, TOPICS.eventsApplied, TOPICS.segmentMembership].map((name) =>
      topicPrefix("automations", name, [Op.READ, Op.DESCRIBE]),
    ),
    group("automations", "automations", Pattern.PREFIXED),
    // The ops console browses every pipeline topic and replays dead letters back into the raw topic.
    ...[TOPICS.raw, TOPICS.dlq, TOPICS.contactUpdated, TOPICS.eventsApplied, TOPICS.segmentMembership].map(
      (name) => topicPrefix("console", name, [Op.READ, Op.DESCRIBE, Op.DESCRIBE_CONFIGS]),
    ),
    topicPrefix("console", TOPICS.raw, [Op.WRITE]),
    idempotent("console"),
    group("console", "console", Pattern.PREFIXED),
    // Consumer lag of every group on the overview page.
    { ...group("console", "*", Pattern.LITERAL), operations: [Op.DESCRIBE] },
    {
      principal: "console",
      resourceType: Res.CLUSTER,
      resourceName: "kafka-cluster",
      pattern: Pattern.LITERAL,
      operations: [Op.DESCRIBE, Op.DESCRIBE_CONFIGS],
    },
    {
      principal: "consumer",
      resourceType: Res.TOPIC,
      resourceName: TOPICS.segmentMembership,
      pattern: Pattern.LITERAL,
      operations: [Op.READ, Op.DESCRIBE],
    },
    group("consumer", "*", Pattern.LITERAL),
    group("consumer", "resolver-worker", Pattern.PREFIXED, "deny"),
    group("consumer", "crm-connect", Pattern.PREFIXED, "deny"),
    group("consumer", s.connectGroup, Pattern.LITERAL, "deny"),
  ];
}

/** Creates the ACLs (idempotent: Kafka keeps one binding per distinct entry). */
export async function applyKafkaAcls(admin: Admin, s: StackSettings): Promise<void> {
  const acl = kafkaGrants(s).flatMap((g) =>
    g.operations.map((operation) => ({
      resourceType: g.resourceType,
      resourceName: g.resourceName,
      resourcePatternType: g.pattern,
      principal: `User:${g.principal}`,
      host: "*",
      operation,
      permissionType: g.permission === "deny" ? AclPermissionTypes.DENY : AclPermissionTypes.ALLOW,
    })),
  );
  await admin.createAcls({ acl });
}
