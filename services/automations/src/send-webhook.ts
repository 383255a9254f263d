import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import http from "node:http";
import https from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { isPrivateAddress } from "./ip-guard.ts";
import { retryAfterMs } from "./schedule.ts";

export type AttemptOutcome = "succeeded" | "failed" | "timeout" | "refused" | "gone";

export interface AttemptResult {
  outcome: AttemptOutcome;
  statusCode?: number;
  error?: string;
  /** The first characters of the answer (storable text), for the delivery log. */
  excerpt?: string;
  retryAfterMs?: number;
  durationMs: number;
}

export interface SendOptions {
  timeoutMs: number;
  maxResponseBytes: number;
  /** Development only: loopback, private and link-local targets allowed. */
  allowPrivate: boolean;
}

class RefusedTarget extends Error {}

/**
 * Resolves like dns.lookup but refuses when any address of the name is private: the address checked is the one
 * the socket connects to (no second resolution to rebind), and a name that also points inward is refused whole.
 */
const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
    if (error) return callback(error, "", 0);
    const list = addresses ?? [];
    if (list.length === 0 || list.some((a) => isPrivateAddress(a.address))) {
      return callback(new RefusedTarget(`${hostname} resolves to a private or local address`), "", 0);
    }
    if ((options as { all?: boolean }).all)
      return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
    callback(null, list[0]!.address, list[0]!.family);
  });
};

// Keep-alive pools: a busy endpoint reuses its connections (TLS handshakes are the expensive part).
const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 256 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 256 }),
};
const privateAgents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 256 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 256 }),
};

const printable = (text: string) =>
  text
    .replaceAll("\u0000", "\ufffd")
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd")
    .slice(0, 256);

/**
 * POSTs one signed webhook. Never throws: every ending is an outcome. 2xx succeeded; 410 gone (the endpoint asks
 * to be disabled); any other status failed (Retry-After kept); no answer within `timeoutMs` (connect to last byte)
 * timeout; a private target (when not allowed) refused. Redirects are not followed (a 3xx is a failure), and at
 * most `maxResponseBytes` of the answer are read.
 */
export function sendWebhook(
  url: string,
  headers: Record<string, string>,
  body: string,
  options: SendOptions,
): Promise<AttemptResult> {
  const started = performance.now();
  const done = (result: Omit<AttemptResult, "durationMs">): AttemptResult => ({
    ...result,
    durationMs: Math.round(performance.now() - started),
  });
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return Promise.resolve(done({ outcome: "refused", error: "invalid URL" }));
  }
  const secure = target.protocol === "https:";
  if (!secure && target.protocol !== "http:")
    return Promise.resolve(done({ outcome: "refused", error: "not http(s)" }));
  const host = target.hostname.replace(/^\[(.*)\]$/, "$1");
  if (!options.allowPrivate && isIP(host) && isPrivateAddress(host)) {
    return Promise.resolve(done({ outcome: "refused", error: "private or local address" }));
  }
  const pool = options.allowPrivate ? privateAgents : agents;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: Omit<AttemptResult, "durationMs">) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(done(result));
    };
    const request = (secure ? https : http).request(
      {
        protocol: target.protocol,
        hostname: host,
        port: target.port || (secure ? 443 : 80),
        path: `${target.pathname}${target.search}`,
        method: "POST",
        headers: {
          ...headers,
          "content-type": "application/json",
          "content-length": String(Buffer.byteLength(body)),
          "user-agent": "crm-automations/1",
        },
        agent: secure ? pool.https : pool.http,
        ...(options.allowPrivate ? {} : { lookup: guardedLookup }),
        ...(secure ? { servername: isIP(host) ? undefined : host } : {}),
      },
      (response) => {
        const status = response.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let bytes = 0;
        response.on("data", (chunk: Buffer) => {
          if (bytes < options.maxResponseBytes)
            chunks.push(chunk.subarray(0, options.maxResponseBytes - bytes));
          bytes += chunk.length;
          if (bytes >= options.maxResponseBytes) {
            // Enough for the log: the rest is not read, and this connection is not reused.
            response.destroy();
            settle();
          }
        });
        const settle = () => {
          const excerpt = printable(Buffer.concat(chunks).toString("utf8"));
          if (status >= 200 && status < 300)
            return finish({ outcome: "succeeded", statusCode: status, excerpt });
          if (status === 410) return finish({ outcome: "gone", statusCode: status, excerpt });
          const header = response.headers["retry-after"];
          finish({
            outcome: "failed",
            statusCode: status,
            excerpt,
            error: status >= 300 && status < 400 ? "redirect not followed" : `HTTP ${status}`,
            retryAfterMs: retryAfterMs(Array.isArray(header) ? header[0] : header),
          });
        };
        response.on("end", settle);
        response.on("error", (error) =>
          finish({ outcome: "failed", statusCode: status, error: error.message }),
        );
      },
    );
    const timer = setTimeout(() => {
      finish({ outcome: "timeout", error: `no answer within ${options.timeoutMs} ms` });
      request.destroy();
    }, options.timeoutMs);
    request.on("error", (error) => {
      if (error instanceof RefusedTarget) finish({ outcome: "refused", error: error.message });
      else finish({ outcome: "failed", error: printable(error.message) });
    });
    request.end(body);
  });
}
