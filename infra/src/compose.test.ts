import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { stackSettings } from "./stack/settings.ts";

// docker-compose.yml cannot run on machines without a Docker engine; this keeps it honest against the native
// stack: the same parts, on the same host ports, with logical WAL and the services' role names.
describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(join(repoRoot(), "docker-compose.yml"), "utf8")) as {
    services: Record<string, { ports?: string[]; command?: string[]; environment?: Record<string, unknown> }>;
  };
  const s = stackSettings({});
  const hostPort = (service: string) => compose.services[service]?.ports?.[0]?.split(":")[0];

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
    expect(hostPort("resolver-worker")).toBe(String(s.workerPort));
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
});
