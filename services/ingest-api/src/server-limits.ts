import { type Server, type ServerOptions, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Counter } from "prom-client";

export interface ServerLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxConnections: number;
}

/**
 * Node's own deadlines for the server @hono/node-server creates. Node looks for expired requests every
 * `connectionsCheckingInterval` (30 s by default, which would let a timed-out socket live 30 s longer): once a
 * second makes the timeouts hold to within a second.
 */
export function serverOptions(limits: ServerLimits): ServerOptions {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: 1_000,
  };
}

/**
 * Caps open connections (Node closes any beyond `maxConnections` as soon as it is accepted) and answers what
 * Node refuses before a request reaches the app (a timed-out request, oversized headers, a malformed request)
 * in SPEC 4's JSON error shape when nothing was written on the socket yet; otherwise the socket is just closed.
 */
export function limitConnections(server: Server, limits: ServerLimits, refused: Counter<"reason">): void {
  server.maxConnections = limits.maxConnections;
  server.on("drop", () => refused.inc({ reason: "max_connections" }));
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    // the client hung up: nobody to answer
    if (error.code === "ECONNRESET") {
      socket.destroy();
      return;
    }
    const [status, code, message]: [number, string, string] =
      error.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [408, "request_timeout", "request did not arrive in time"]
        : error.code === "HPE_HEADER_OVERFLOW"
          ? [431, "headers_too_large", "request headers are too large"]
          : [400, "invalid_request", "malformed HTTP request"];
    refused.inc({ reason: code });
    // An answer already started on this socket (e.g. a 401 sent before the body arrived): writing another would
    // corrupt it, only closing is left. Node's default handler makes the same check on the same internal field.
    const answering = (socket as Socket & { _httpMessage?: { _headerSent?: boolean } })._httpMessage;
    if (!socket.writable || answering?._headerSent) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify({ ok: false, error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      () => socket.destroy(),
    );
  });
}
