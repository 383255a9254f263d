import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import { HttpError } from "@crm/errors";
import type { HttpBindings } from "@hono/node-server";
import type { Caller } from "./auth.ts";

export interface AppVariables {
  requestId: string;
  caller: Caller;
  /** Epoch ms by which the whole body must have arrived (set when the headers are in, see app.ts). */
  bodyDeadline?: number;
}

/** The body a route reads, and by when it must have arrived. */
export interface BodySource {
  stream: Request | IncomingMessage;
  deadline: number | undefined;
}

/**
 * The request whose body a route reads: under @hono/node-server, the Node request itself (`c.env.incoming`);
 * elsewhere (tests calling `app.request()`), the Web Request.
 */
export function bodySource(c: {
  env: unknown;
  req: { raw: Request };
  var: { bodyDeadline?: number | undefined };
}): BodySource {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  return { stream: incoming ?? c.req.raw, deadline: c.var.bodyDeadline };
}

/**
 * A request header: under @hono/node-server read from the Node request (`c.req.header()` makes it build a Web
 * Headers object of every header first, a visible share of the API's CPU per single event), elsewhere from the Web
 * Request. Node joins repeated headers with ", " as Headers does, but keeps only the first of those it may not
 * repeat (Authorization among them).
 */
export function requestHeader(
  c: { env: unknown; req: { header: (name: string) => string | undefined } },
  name: string,
): string | undefined {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!incoming) return c.req.header(name);
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/**
 * The address a request comes from, as the key of per-address limits: the socket's peer, or with
 * `trustedProxyHops` N > 0 the address the Nth proxy saw, read from X-Forwarded-For counting from the right
 * (where each proxy appends; entries further left are whatever the client wrote). IPv6 addresses count per /64,
 * which one host usually owns whole. Undefined when there is no socket (tests calling `app.request()`).
 */
export function clientAddress(c: { env: unknown }, trustedProxyHops: number): string | undefined {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!incoming) return undefined;
  const forwardedFor = incoming.headers["x-forwarded-for"];
  return addressOf(
    incoming.socket.remoteAddress,
    Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor,
    trustedProxyHops,
  );
}

/** `clientAddress` from its parts; an entry that is not an IP address falls back to the peer. */
export function addressOf(
  peer: string | undefined,
  forwardedFor: string | undefined,
  trustedProxyHops: number,
): string | undefined {
  let address = peer;
  if (trustedProxyHops > 0 && forwardedFor) {
    const hops = forwardedFor.split(",").map((entry) => entry.trim());
    const chosen = hops[Math.max(0, hops.length - trustedProxyHops)];
    if (chosen && isIP(chosen)) address = chosen;
  }
  return address === undefined ? undefined : addressKey(address);
}

/** IPv4 as is (also when IPv4-mapped), IPv6 as its /64 prefix. */
function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIP(address) !== 6) return address;
  const [head = "", tail] = address.split("%")[0]!.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups
    .slice(0, 4)
    .map((group) => Number.parseInt(group, 16).toString(16))
    .join(":")}::/64`;
}

/**
 * Reads a JSON body of at most `limit` bytes: 413 `payload_too_large` past it (without buffering more than
 * the limit), 400 `invalid_request` when it is not JSON, 408 `request_timeout` (and the connection closed after
 * the answer) when it has not all arrived by the source's deadline. A Node request is read directly: touching
 * the Web Request's body makes @hono/node-server build a full undici Request with a web stream and an
 * AbortController, about a fifth of the API's CPU per single event.
 */
export async function readJsonBody(source: BodySource, limit: number): Promise<unknown> {
  return parseJson((await readBody(source, limit)).toString("utf8"));
}

/** readJsonBody for a route whose body is optional: undefined when there is none or it is empty. */
export async function readOptionalJsonBody(source: BodySource, limit: number): Promise<unknown> {
  if (source.stream instanceof Request && !source.stream.body) return undefined;
  const text = (await readBody(source, limit)).toString("utf8");
  return text.trim() === "" ? undefined : parseJson(text);
}

/** The bytes of a body of at most `limit` bytes, with readJsonBody's answers for too large, cut off or late. */
export function readBody(source: BodySource, limit: number): Promise<Buffer> {
  const { stream, deadline } = source;
  return stream instanceof Request ? readWeb(stream, limit, deadline) : readNode(stream, limit, deadline);
}

/** JSON.parse, or 400 `invalid_request`. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "invalid_request", "body is not valid JSON", {
      issues: [{ path: [], message: "expected a JSON object" }],
    });
  }
}

function readNode(incoming: IncomingMessage, limit: number, deadline: number | undefined): Promise<Buffer> {
  if (Number(incoming.headers["content-length"] ?? "NaN") > limit) return Promise.reject(tooLarge(limit));
  let timer: NodeJS.Timeout | undefined;
  const read = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > limit) {
        // Stop buffering (an async iterator would destroy the socket and lose the 413); Node discards the rest.
        incoming.off("data", onData);
        incoming.resume();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    incoming.on("data", onData);
    incoming.once("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    incoming.once("error", reject);
    // a client that hangs up mid-body: nothing to answer, but the handler must not wait forever
    incoming.once("close", () => {
      if (!incoming.complete) reject(new HttpError(400, "invalid_request", "request body was cut off"));
    });
    if (deadline !== undefined) {
      timer = setTimeout(() => {
        // everything has arrived and is being delivered: let it finish
        if (incoming.complete) return;
        incoming.off("data", onData);
        reject(timedOut());
      }, deadline - Date.now());
    }
  });
  return read.finally(() => clearTimeout(timer));
}

async function readWeb(request: Request, limit: number, deadline: number | undefined): Promise<Buffer> {
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (declared > limit) throw tooLarge(limit);
  if (!request.body) throw new HttpError(400, "invalid_request", "request body is empty");
  const reader = request.body.getReader();
  let timer: NodeJS.Timeout | undefined;
  const expired =
    deadline === undefined
      ? undefined
      : new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(timedOut()), deadline - Date.now());
        });
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await (expired ? Promise.race([reader.read(), expired]) : reader.read());
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge(limit);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof HttpError && error.status === 408) await reader.cancel().catch(() => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks);
}

/**
 * 408 for a body that did not arrive in time. The rest of it will never be read, so the connection cannot
 * carry another request: `Connection: close` makes Node close it once the answer is written.
 */
function timedOut(): HttpError {
  return new HttpError(408, "request_timeout", "request body did not arrive in time", {
    headers: { Connection: "close" },
  });
}

export function tooLarge(limit: number): HttpError {
  return new HttpError(413, "payload_too_large", `body exceeds ${limit} bytes`);
}
