import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freePort } from "./free-port.ts";
import { poll } from "./poll.ts";
import { ServiceProcess, stopAllServices } from "./service-process.ts";

const entry = "packages/process/src/service-process.fixture.ts";

async function fixture(env: Record<string, string> = {}, options: { restartOnCrash?: boolean } = {}) {
  const port = await freePort();
  return new ServiceProcess({
    name: "fixture",
    entry,
    env: { FIXTURE_PORT: String(port), ...env },
    healthUrl: `http://127.0.0.1:${port}/healthz`,
    output: "capture",
    ...options,
  });
}

afterEach(() => stopAllServices());

describe("ServiceProcess", () => {
  it("starts once the health URL answers, keeps the output, and stops with the exit code", async () => {
    const service = await fixture({ FIXTURE_READY_AFTER_MS: "300" });
    await service.start();
    expect(service.running).toBe(true);
    expect(service.output()).toContain("fixture: listening");
    expect(await service.stop()).toBe(0);
    expect(service.running).toBe(false);
    expect(service.unexpectedExits).toEqual([]);
  });

  it("fails at once, with the output, when the process exits before it is healthy", async () => {
    const service = await fixture({ FIXTURE_EXIT_AT_START: "1" });
    const started = Date.now();
    await expect(service.start(30_000)).rejects.toThrow(/exited \(code 1.*refusing to start/s);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it("records an exit nobody asked for, and restarts it when supervised", async () => {
    const service = await fixture({}, { restartOnCrash: true });
    await service.start();
    const firstPid = service.pid;
    await fetch(`${service.url}/crash`).catch(() => undefined);
    await poll("a restart", () => service.running && service.pid !== firstPid, { timeoutMs: 20_000 });
    expect(service.unexpectedExits).toMatchObject([{ code: 3 }]);
    await service.waitHealthy();
  });

  it("appends to a log file, with a line at each start", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "service-process-")), "fixture.log");
    const port = await freePort();
    const service = new ServiceProcess({
      name: "fixture",
      entry,
      env: { FIXTURE_PORT: String(port) },
      healthUrl: `http://127.0.0.1:${port}/healthz`,
      output: { file },
    });
    await service.start();
    await service.kill();
    await service.start();
    await service.stop();
    const log = readFileSync(file, "utf8");
    expect(log.match(/--- started/g)).toHaveLength(2);
    expect(log.match(/fixture: listening/g)).toHaveLength(2);
  });
});
