import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startHealthServer } from "./health-server.ts";

describe("startHealthServer", () => {
  let close: (() => void) | undefined;
  afterEach(() => close?.());

  async function serve(ready: boolean) {
    const server = startHealthServer({
      port: 0,
      host: "127.0.0.1",
      readiness: async () => ({ ok: ready, postgres: ready }),
      metrics: async () => ({ contentType: "text/plain; version=0.0.4", body: "up 1\n" }),
    });
    close = () => server.close();
    await new Promise((resolve) => server.once("listening", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it("answers healthz, readyz with the probe's parts, metrics, and 404 in the error shape", async () => {
    const url = await serve(true);
    expect(await (await fetch(`${url}/healthz`)).json()).toEqual({ ok: true });
    const ready = await fetch(`${url}/readyz`);
    expect([ready.status, await ready.json()]).toEqual([200, { ok: true, postgres: true }]);
    const metrics = await fetch(`${url}/metrics`);
    expect([metrics.headers.get("content-type"), await metrics.text()]).toEqual([
      "text/plain; version=0.0.4",
      "up 1\n",
    ]);
    const missing = await fetch(`${url}/nope`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });

  it("answers 503 while the probe says not ready", async () => {
    const url = await serve(false);
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
  });
});
