import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseEnvFile, stackDir } from "@crm/config";
import { createKafka, kafkaCredentials } from "@crm/kafka";
import { afterAll, describe, expect, it } from "vitest";
import { KAFKA_AUTH_MARKER } from "./kafka-auth.ts";
import { isAlive, type PidRecord, portOpen, readPid } from "./proc.ts";

// A second, throwaway stack on other ports and its own STACK_DIR, so `down` cannot disturb the stack the other
// integration tests use. Jars are shared with the main stack (STACK_LIB_DIR), as they are only a cache.
const dir = mkdtempSync(join(tmpdir(), "crm-stack-test-"));
// Enterable by the unprivileged postgres user, so the whole throwaway stack lives under `dir`.
chmodSync(dir, 0o755);
const ports = { pg: 56432, kafka: 19092, controller: 19093, connect: 18083, registry: 18081 };
const env = {
  ...process.env,
  STACK_DIR: dir,
  STACK_LIB_DIR: join(stackDir(), "lib"),
  STACK_PG_PORT: String(ports.pg),
  STACK_KAFKA_PORT: String(ports.kafka),
  STACK_KAFKA_CONTROLLER_PORT: String(ports.controller),
  STACK_CONNECT_PORT: String(ports.connect),
  STACK_REGISTRY_PORT: String(ports.registry),
  STACK_PARTITIONS: "3",
};

function stack(command: string) {
  const result = spawnSync(process.execPath, ["--import", "tsx", "infra/src/stack/cli.ts", command], {
    env,
    encoding: "utf8",
    timeout: 300_000,
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

function recordedPids(): Record<string, PidRecord> {
  const pidsDir = join(dir, "pids");
  if (!existsSync(pidsDir)) return {};
  return Object.fromEntries(
    readdirSync(pidsDir).map((file) => [
      file.replace(/\.pid$/, ""),
      JSON.parse(readFileSync(join(pidsDir, file), "utf8")),
    ]),
  );
}

/** Every live process whose command line mentions the throwaway stack dir (JVM props, postgres -D, backends). */
function processesUsing(path: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.includes(path)) found.push(Number(entry));
    } catch {}
  }
  return found;
}

describe("stack launcher", () => {
  afterAll(() => {
    stack("down");
    rmSync(dir, { recursive: true, force: true });
  });

  it("is idempotent on up, reports status, and down stops exactly what up started", async () => {
    const first = stack("up");
    expect(first.status, first.output).toBe(0);
    expect(readFileSync(join(dir, "env"), "utf8")).toContain(`KAFKA_BROKERS=127.0.0.1:${ports.kafka}`);
    const pids = recordedPids();
    expect(Object.keys(pids).sort()).toEqual(["connect", "kafka", "postgres", "registry"]);
    for (const record of Object.values(pids)) expect(isAlive(record)).toBe(true);

    const second = stack("up");
    expect(second.status, second.output).toBe(0);
    expect(recordedPids()).toEqual(pids);

    const status = stack("status");
    expect(status.status, status.output).toBe(0);
    expect(status.output).toMatch(/kafka\s+up/);

    const down = stack("down");
    expect(down.status, down.output).toBe(0);
    for (const record of Object.values(pids)) expect(isAlive(record)).toBe(false);
    for (const port of Object.values(ports)) expect(await portOpen("127.0.0.1", port)).toBe(false);
    expect(processesUsing(dir)).toEqual([]);
    expect(stack("status").status).toBe(3);

    const reset = stack("reset");
    expect(reset.status, reset.output).toBe(0);
    expect(existsSync(join(dir, "kafka"))).toBe(false);
  });

  it("formats Kafka again with its SCRAM users when the stack dir predates authentication", async () => {
    expect(stack("up").status).toBe(0);
    const before = readPid(join(dir, "pids"), "kafka");
    // A dir made before authentication: formatted, running, without the marker (and without SCRAM users).
    rmSync(join(dir, KAFKA_AUTH_MARKER));
    const migrated = stack("up");
    expect(migrated.status, migrated.output).toBe(0);
    expect(migrated.output).toMatch(/predates Kafka authentication/);
    expect(existsSync(join(dir, KAFKA_AUTH_MARKER))).toBe(true);
    expect(readPid(join(dir, "pids"), "kafka")?.pid).not.toBe(before?.pid);
    const written = parseEnvFile(readFileSync(join(dir, "env"), "utf8"));
    const admin = createKafka({
      brokers: [written.KAFKA_BROKERS!],
      clientId: "launcher-test",
      credentials: kafkaCredentials(written, "admin") ?? null,
    }).admin();
    await admin.connect();
    try {
      expect(await admin.listTopics()).toEqual(
        expect.arrayContaining(["events.raw.v1", "contact.updated.v1"]),
      );
    } finally {
      await admin.disconnect();
    }
    expect(stack("down").status).toBe(0);
  });
});
