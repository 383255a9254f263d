import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import { HttpError } from "@crm/errors";
import { sleep } from "@crm/process";
import type { Context } from "hono";
import { Hono } from "hono";
import type { Caller } from "../auth.ts";
import { type AppVariables, bodySource, parseJson, readBody } from "../http.ts";
import { sha256, uuidV5 } from "../idempotency.ts";
import { type Ingest, type PreparedEvent, parseEventOr400 } from "../ingest.ts";
import type { RejectedEvent, RejectedEventStore } from "../rejected-events.ts";
import {
  MAX_MESSAGE_BYTES,
  MAX_SEGMENT_BATCH_BYTES,
  MAX_SEGMENT_BATCH_MESSAGES,
  mapSegmentMessage,
  messageIdOf,
  messageSizeProblem,
  type Rejection,
  rejectionCode,
  type SegmentType,
  segmentPath,
} from "../segment-message.ts";
import { TrackBody } from "../track-schema.ts";

const gunzipAsync = promisify(gunzip);

type SegmentContext = Context<{ Variables: AppVariables }>;

export interface SegmentRoutesOptions {
  ingest: Ingest;
  rejected: RejectedEventStore;
  /** Authenticates a write key (undefined: none was sent); only ingest keys pass. */
  authenticate: (c: SegmentContext, writeKey: string | undefined) => Promise<Caller>;
  /**
   * How long a request waits for a message whose messageId another request holds in flight, before answering 503
   * (retried by the SDKs) instead: never 409, which analytics-node drops (default 5 s, under its 10 s timeout).
   */
  inFlightWaitMs?: number;
}

/** The write key of an `Authorization` header: Basic `base64(writeKey:)` (Segment's SDKs) or Bearer. */
export function writeKeyOfHeader(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const basic = /^Basic\s+([A-Za-z0-9+/=_-]{1,1024})$/i.exec(header);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    return colon < 0 ? decoded : decoded.slice(0, colon);
  }
  const bearer = /^Bearer\s+(\S+)$/i.exec(header);
  return bearer ? bearer[1] : undefined;
}

/** Segment's answer to a body over its limit: 400 (not 413), which its SDKs never retry. */
function tooLarge(limit: number): HttpError {
  return new HttpError(400, "payload_too_large", `body exceeds ${limit} bytes`);
}

/** The body as JSON: gzip (RudderStack's default) inflated up to the same limit as plain bodies. */
async function readSegmentBody(c: SegmentContext, limit: number): Promise<unknown> {
  let bytes: Buffer;
  try {
    bytes = await readBody(bodySource(c), limit);
  } catch (error) {
    if (error instanceof HttpError && error.status === 413) throw tooLarge(limit);
    throw error;
  }
  const encoding = (c.req.header("content-encoding") ?? "identity").trim().toLowerCase();
  if (encoding === "gzip" || encoding === "x-gzip") {
    try {
      bytes = await gunzipAsync(bytes, { maxOutputLength: limit });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") throw tooLarge(limit);
      throw new HttpError(400, "invalid_request", "body is not valid gzip");
    }
  } else if (encoding !== "identity") {
    throw new HttpError(400, "invalid_request", `unsupported content-encoding ${encoding}`);
  }
  const body = parseJson(bytes.toString("utf8"));
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "invalid_request", "body must be a JSON object");
  }
  return body;
}

/** A message refused on its own, as the request's answer lists it and rejected_events keeps it. */
interface Refusal {
  index: number;
  messageId: string | undefined;
  rejection: Rejection;
}

/**
 * `POST /v1/{track,identify,page,screen,group,alias,batch,import}` with Segment's statuses: 200 unless the body is
 * not JSON or too large (400), the write key is bad (401), the caller is over its rate limit (429) or a dependency
 * is down (503, retried by the SDKs). A message that fails validation is refused alone: kept in rejected_events
 * with its reason and counted, while the request answers 200. Every message goes through the accept path of
 * /v1/track (parseEventOr400, Ingest.prepare and Ingest.accept) with its messageId as idempotency key.
 */
export function segmentRoutes(options: SegmentRoutesOptions) {
  const { ingest, rejected } = options;
  const inFlightWaitMs = options.inFlightWaitMs ?? 5_000;
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/:call{track|identify|page|screen|group|alias|batch|import}", async (c) => {
    const call = c.req.param("call");
    const isBatch = call === "batch" || call === "import";
    const limit = isBatch ? MAX_SEGMENT_BATCH_BYTES : MAX_MESSAGE_BYTES;
    // The header's key is checked before the body is read; analytics-node 2.x sends the key in the body only.
    const headerKey = writeKeyOfHeader(c.req.header("authorization"));
    let caller = headerKey === undefined ? undefined : await options.authenticate(c, headerKey);
    const body = (await readSegmentBody(c, limit)) as Record<string, unknown>;
    caller ??= await options.authenticate(
      c,
      typeof body.writeKey === "string" && body.writeKey ? body.writeKey : undefined,
    );
    if (caller.kind !== "ingest_key")
      throw new HttpError(401, "unauthorized", "a write key is an ingest key");

    let messages: unknown[];
    if (isBatch) {
      if (!Array.isArray(body.batch)) throw new HttpError(400, "invalid_request", "batch must be an array");
      if (body.batch.length > MAX_SEGMENT_BATCH_MESSAGES) {
        throw new HttpError(
          400,
          "payload_too_large",
          `a batch holds at most ${MAX_SEGMENT_BATCH_MESSAGES} messages`,
        );
      }
      messages = body.batch;
    } else {
      messages = [body];
    }
    for (const [name, value] of Object.entries(ingest.rateLimit(caller, Math.max(1, messages.length)))) {
      c.header(name, value);
    }

    const business = caller.business;
    const receivedAt = Date.now();
    const refusals: Refusal[] = [];
    const prepared: { index: number; event: PreparedEvent }[] = [];
    const firstOfKey = new Map<string, string>();
    let duplicates = 0;
    await Promise.all(
      messages.map(async (message, index) => {
        const messageId = messageIdOf(message);
        const refuse = (rejection: Rejection) => refusals.push({ index, messageId, rejection });
        const mapped = mapSegmentMessage(message, {
          pathType: isBatch ? undefined : (call as SegmentType),
          businessId: business.businessId,
          country: business.defaultCountry,
          receivedAt,
          batchSentAt: isBatch ? body.sentAt : undefined,
        });
        if (!mapped.ok) return refuse(mapped);
        // messageId is the idempotency key (hashed: any text a sender uses fits the key's 1..255 ASCII).
        const key = messageId === undefined ? undefined : `segment:${sha256(messageId)}`;
        try {
          const event = parseEventOr400(TrackBody, mapped.body);
          const ready = await ingest.prepare(caller, event, mapped.hashed, key);
          prepared.push({ index, event: ready });
        } catch (error) {
          if (!(error instanceof HttpError)) throw error;
          refuse(refusalOf(error));
        }
      }),
    );
    // A messageId repeated in one request: the first occurrence is the message, a later one is a duplicate (the
    // same body) or refused (another body), as it would be in a later request.
    const kept: typeof prepared = [];
    for (const p of prepared.sort((x, y) => x.index - y.index)) {
      const keyed = p.event.idempotency;
      const first = keyed && firstOfKey.get(keyed.key);
      if (!keyed || !first) {
        if (keyed) firstOfKey.set(keyed.key, keyed.requestHash);
        kept.push(p);
      } else if (first === keyed.requestHash) duplicates += 1;
      else
        refusals.push({
          index: p.index,
          messageId: messageIdOf(messages[p.index]),
          rejection: duplicateOtherBody(),
        });
    }

    let accepted = 0;
    let replayed = duplicates;
    let pending = kept;
    const waitUntil = Date.now() + inFlightWaitMs;
    while (pending.length > 0) {
      const outcomes = await ingest.accept(
        caller,
        pending.map((p) => p.event),
        c.get("requestId"),
      );
      const inFlight: typeof pending = [];
      outcomes.forEach((outcome, i) => {
        const { index, event } = pending[i]!;
        if (outcome.kind === "accepted") accepted += 1;
        else if (outcome.kind === "replay") replayed += 1;
        else if (outcome.kind === "mismatch") {
          refusals.push({ index, messageId: messageIdOf(messages[index]), rejection: duplicateOtherBody() });
        } else inFlight.push({ index, event });
      });
      pending = inFlight;
      if (pending.length === 0) break;
      // Another request holds these messageIds (a retry racing its first try): what it sends is the same
      // message, so wait for its outcome; past the wait, a 503 makes the SDK retry (a 409 would make it drop).
      if (Date.now() >= waitUntil) {
        throw new HttpError(503, "unavailable", "a message with this messageId is still in flight", {
          headers: { "Retry-After": "1" },
        });
      }
      await sleep(Math.min(200, Math.max(0, waitUntil - Date.now())));
    }

    refusals.sort((a, b) => a.index - b.index);
    if (refusals.length > 0) {
      // Stored before answering: if the database does not take them, the 503 makes the SDK send them again.
      await rejected.add(
        refusals.map((r) => rejectedEvent(r, messages[r.index], business.businessId, caller)),
      );
      for (const r of refusals) {
        ingest.metrics.rejectedMessages.inc({ business_id: business.businessId, reason: r.rejection.code });
      }
    }
    ingest.metrics.segmentMessages.inc({ outcome: "accepted" }, accepted);
    ingest.metrics.segmentMessages.inc({ outcome: "replayed" }, replayed);
    ingest.metrics.segmentMessages.inc({ outcome: "rejected" }, refusals.length);
    ingest.logger.info(
      {
        request_id: c.get("requestId"),
        business_id: business.businessId,
        call,
        accepted,
        replayed,
        rejected: refusals.length,
      },
      "segment_batch_tracked",
    );
    return c.json(
      {
        success: true,
        accepted,
        replayed,
        rejected: refusals.map((r) => ({
          index: r.index,
          ...(r.messageId === undefined ? {} : { message_id: r.messageId }),
          code: r.rejection.code,
          reason: r.rejection.reason,
        })),
      },
      200,
    );
  });

  return app;
}

function duplicateOtherBody(): Rejection {
  return {
    ok: false,
    code: "duplicate_other_body",
    reason: "messageId: already used with another message (the first one counts)",
  };
}

/** An accept-path refusal (400 with issues, 403) as a message's rejection, in Segment's field names. */
function refusalOf(error: HttpError): Rejection {
  const issues = (error.details.issues ?? []) as { path: string[]; message: string }[];
  const reason =
    issues.length > 0 ? issues.map((i) => `${segmentPath(i.path)}: ${i.message}`).join("; ") : error.message;
  return {
    ok: false,
    code: rejectionCode(
      error.status,
      issues.map((i) => i.path),
    ),
    reason,
  };
}

function rejectedEvent(
  refusal: Refusal,
  message: unknown,
  businessId: string,
  caller: Caller,
): RejectedEvent {
  const { messageId, rejection } = refusal;
  return {
    // A retry of the same batch stores nothing twice.
    id:
      messageId === undefined
        ? randomUUID()
        : uuidV5(`${businessId}\n${caller.id}\nrejected:${rejection.code}\n${messageId}`),
    businessId,
    source: "segment",
    messageId,
    reasonCode: rejection.code,
    reason: rejection.reason,
    message: keptMessage(message),
  };
}

/** The message as JSON text; a message too deep for JSON.stringify is described instead. */
function keptMessage(message: unknown): string {
  const problem = messageSizeProblem(message);
  if (problem && problem.code !== "too_large") return JSON.stringify({ not_kept: problem.reason });
  return JSON.stringify(message) ?? "null";
}
