import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendWebhook } from "./send-webhook.ts";

// The HTTP side of an attempt against a local server: outcomes, redirects, body limit, timeout, private targets.
describe("sending one webhook", () => {
  let server: Server;
  let base: string;
  const hits: string[] = [];
  const options = { timeoutMs: 2_000, maxResponseBytes: 1_024, allowPrivate: true };

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? "");
      if (req.url === "/ok") res.end("fine");
      else if (req.url === "/gone") res.writeHead(410).end();
      else if (req.url === "/redirect") res.writeHead(302, { location: "/ok" }).end();
      else if (req.url === "/busy") res.writeHead(503, { "retry-after": "120" }).end("later");
      else if (req.url === "/huge") {
        res.writeHead(500);
        const chunk = Buffer.alloc(64 * 1024, "x");
        let sent = 0;
        const pump = () => {
          while (sent < 50 * 1024 * 1024 && res.write(chunk)) sent += chunk.length;
          if (sent < 50 * 1024 * 1024) res.once("drain", pump);
          else res.end();
        };
        pump();
      } else if (req.url === "/nul") res.end("a\u0000b\ud800");
      // /hang: never answers
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  const send = (path: string, opts = options) =>
    sendWebhook(`${base}${path}`, { "webhook-id": "m" }, "{}", opts);

  it("2xx succeeded, 410 gone, 5xx failed with Retry-After kept", async () => {
    expect(await send("/ok")).toMatchObject({ outcome: "succeeded", statusCode: 200, excerpt: "fine" });
    expect(await send("/gone")).toMatchObject({ outcome: "gone", statusCode: 410 });
    expect(await send("/busy")).toMatchObject({ outcome: "failed", statusCode: 503, retryAfterMs: 120_000 });
  });

  it("does not follow redirects", async () => {
    hits.length = 0;
    expect(await send("/redirect")).toMatchObject({
      outcome: "failed",
      statusCode: 302,
      error: "redirect not followed",
    });
    expect(hits).toEqual(["/redirect"]);
  });

  it("reads at most the limit of a huge answer, and keeps a storable excerpt", async () => {
    const started = Date.now();
    const result = await send("/huge");
    expect(result).toMatchObject({ outcome: "failed", statusCode: 500 });
    expect(result.excerpt!.length).toBeLessThanOrEqual(256);
    expect(Date.now() - started).toBeLessThan(2_000);
    const nul = await send("/nul");
    expect(nul.excerpt).toBe("a\ufffdb\ufffd");
  });

  it("gives up after the timeout", async () => {
    const result = await send("/hang", { ...options, timeoutMs: 300 });
    expect(result).toMatchObject({ outcome: "timeout" });
    expect(result.durationMs).toBeGreaterThanOrEqual(290);
  });

  it("refuses private targets unless allowed, by literal or by name", async () => {
    const strict = { ...options, allowPrivate: false };
    for (const url of [
      `${base}/ok`,
      base.replace("127.0.0.1", "localhost") + "/ok",
      "http://[::ffff:7f00:1]/ok",
    ]) {
      hits.length = 0;
      expect(await sendWebhook(url, {}, "{}", strict)).toMatchObject({ outcome: "refused" });
      expect(hits).toEqual([]);
    }
  });
});
