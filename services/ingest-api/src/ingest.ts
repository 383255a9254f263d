import { randomUUID } from "node:crypto";
import { HttpError } from "@crm/errors";
import { normalizeEmail, normalizeExternalId, normalizePhone, partitionKey } from "@crm/identity";
import { type EventProducer, type OutgoingMessage, TOPICS } from "@crm/kafka";
import { hashId, type Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { eventIssues } from "@crm/storable";
import type { z } from "zod";
import type { Caller } from "./auth.ts";
import type { IdempotencyStore } from "./idempotency.ts";
import type { Metrics } from "./metrics.ts";
import { type RateLimiter, rateLimitHeaders } from "./rate-limit.ts";
import type { BusinessAccess } from "./tenant-directory.ts";
import type { TrackBody } from "./track-schema.ts";

export interface RateLimits {
  /** Events per second of one user (seed: 20). */
  userPerSecond: number;
  /** Events per second of one ingest key, by business plan. */
  keyPerSecond: (plan: string) => number;
}

export interface IngestDeps {
  producer: EventProducer;
  idempotency: IdempotencyStore;
  limiter: RateLimiter;
  limits: RateLimits;
  logger: Logger;
  logHashSecret: string;
  metrics: Metrics;
  /** Value bytes of an events.raw.v1 message (schema-registry framed JSON in production). */
  encodeRawEvent: (event: RawEventV1) => Buffer | string;
}

export function invalid(message: string, issues: unknown[] = []): HttpError {
  return new HttpError(400, "invalid_request", message, { issues });
}

/** Parses with `schema`, or a 400 `invalid_request` listing every issue (paths, never values). */
export function parseOr400<T extends z.ZodType>(schema: T, raw: unknown, prefix: string[] = []): z.infer<T> {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({
    path: [...prefix, ...i.path.map(String)],
    message: i.message,
  }));
  throw invalid(issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; "), issues);
}

/**
 * Parses an event body (a track body or a batch item): first the storable check of @crm/storable (what is
 * accepted here, the worker can store; depth is walked iteratively before any validator or hash sees it), then
 * `schema`. Either failure is a 400 naming the fields.
 */
export function parseEventOr400<T extends z.ZodType>(
  schema: T,
  raw: unknown,
  prefix: string[] = [],
): z.infer<T> {
  const issues = eventIssues(raw, prefix);
  if (issues.length > 0) {
    throw invalid(issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "), issues);
  }
  return parseOr400(schema, raw, prefix);
}

/** Scope name of a caller in idempotency records and rate-limit buckets. */
export const callerScope = (caller: Caller) => `${caller.kind}:${caller.id}`;

/**
 * Takes `cost` events from the caller's rate limit: 429 `rate_limited` with Retry-After and RateLimit headers
 * when over it. Returns the headers to put on the successful answer.
 */
export function enforceRateLimit(caller: Caller, cost: number, deps: IngestDeps): Record<string, string> {
  const limit =
    caller.kind === "user" ? deps.limits.userPerSecond : deps.limits.keyPerSecond(caller.business.plan);
  const decision = deps.limiter.take(callerScope(caller), limit, cost);
  const headers = rateLimitHeaders(decision);
  if (!decision.allowed) {
    deps.metrics.rateLimited.inc({ caller_kind: caller.kind });
    throw new HttpError(429, "rate_limited", `rate limit of ${limit} events/s exceeded`, { headers });
  }
  return headers;
}

/**
 * The business an event is for: `business_id` in the body, else `props.business_id` (seed compatibility), else
 * the caller's only business. Someone else's business is 403 and nothing is enqueued.
 */
export async function resolveBusiness(
  caller: Caller,
  body: TrackBody,
  deps: IngestDeps,
): Promise<BusinessAccess> {
  const fromProps = body.props?.business_id;
  const named = body.business_id ?? (typeof fromProps === "string" ? fromProps : undefined);
  const allowed = caller.kind === "ingest_key" ? [caller.business] : await caller.businesses();
  if (named === undefined) {
    if (allowed.length === 1) return allowed[0]!;
    if (allowed.length === 0) throw forbidden(caller, deps, undefined);
    throw new HttpError(
      400,
      "business_required",
      "caller belongs to several businesses; name one in business_id",
    );
  }
  const match = allowed.find((b) => b.businessId === named);
  if (!match) throw forbidden(caller, deps, named);
  return match;
}

function forbidden(caller: Caller, deps: IngestDeps, businessId: string | undefined): HttpError {
  deps.logger.warn(
    { caller_kind: caller.kind, caller_hash: hashId(deps.logHashSecret, caller.id), business_id: businessId },
    "crm_track_unauthorized_business",
  );
  return new HttpError(403, "forbidden_business", "caller may not write for this business");
}

/** Normalizes the contact identifiers; an invalid email or phone is a 400 naming the field. */
export function normalizeContact(
  contact: TrackBody["contact"],
  country: string,
  prefix: string[] = [],
): RawEventV1["contact"] {
  if (!contact) return {};
  const out: RawEventV1["contact"] = {};
  const issues: { path: string[]; message: string }[] = [];
  const check = (field: "external_id" | "email" | "phone", result: ReturnType<typeof normalizeEmail>) => {
    if (result.ok) out[field] = result.value;
    else issues.push({ path: [...prefix, "contact", field], message: result.reason });
  };
  if (contact.external_id !== undefined) check("external_id", normalizeExternalId(contact.external_id));
  if (contact.email !== undefined) check("email", normalizeEmail(contact.email));
  if (contact.phone !== undefined) check("phone", normalizePhone(contact.phone, country));
  if (contact.name) out.name = contact.name;
  if (issues.length > 0)
    throw invalid(issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "), issues);
  return out;
}

/** A validated event ready to produce, before its id is known (keyed events get a deterministic one). */
export interface PreparedEvent {
  body: TrackBody;
  business: BusinessAccess;
  contact: RawEventV1["contact"];
  idempotencyKey: string | undefined;
}

export function buildEvent(
  prepared: PreparedEvent,
  caller: Caller,
  eventId: string,
  deps: IngestDeps,
): RawEventV1 {
  const receivedAt = new Date().toISOString();
  const { body } = prepared;
  return {
    event_id: eventId,
    business_id: prepared.business.businessId,
    type: body.type,
    contact: prepared.contact,
    props: body.props ?? {},
    occurred_at: body.occurred_at ? new Date(body.occurred_at).toISOString() : receivedAt,
    received_at: receivedAt,
    source: { kind: caller.kind, id_hash: callerHash(deps.logHashSecret, caller.id) },
  };
}

export const newEventId = () => randomUUID();

const callerHashes = new Map<string, string>();

/** `hashId` of a caller, memoized: an HMAC per event was a visible share of the API's CPU per single event. */
function callerHash(secret: string, callerId: string): string {
  const memoKey = `${secret}\u0000${callerId}`;
  let hash = callerHashes.get(memoKey);
  if (hash === undefined) {
    if (callerHashes.size >= 10_000) callerHashes.clear();
    hash = hashId(secret, callerId);
    callerHashes.set(memoKey, hash);
  }
  return hash;
}

/** Produces events to events.raw.v1 keyed as SPEC 5; resolves only after acks=all, else throws (503). */
export async function produce(events: RawEventV1[], deps: IngestDeps): Promise<void> {
  if (events.length === 0) return;
  const messages: OutgoingMessage[] = events.map((event) => ({
    key: partitionKey(event.business_id, event.contact, event.event_id),
    value: deps.encodeRawEvent(event),
  }));
  const stop = deps.metrics.produceSeconds.startTimer();
  try {
    await deps.producer.send(TOPICS.raw, messages);
    stop({ outcome: "ok" });
  } catch (error) {
    stop({ outcome: "error" });
    throw error;
  }
}
