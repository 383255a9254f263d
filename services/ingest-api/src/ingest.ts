import { randomUUID } from "node:crypto";
import { HttpError } from "@crm/errors";
import { normalizeIdentifiers, partitionKey } from "@crm/identity";
import type { EventProducer, OutgoingMessage } from "@crm/kafka";
import { hashId, type Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { eventIssues } from "@crm/storable";
import type { z } from "zod";
import type { Caller } from "./auth.ts";
import { canonicalJson, type IdempotencyStore, sha256 } from "./idempotency.ts";
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

export function invalid(message: string, issues: unknown[] = []): HttpError {
  return new HttpError(400, "invalid_request", message, { issues });
}

/** A 400 `invalid_request` whose message names every field in `issues` (paths, never values). */
function invalidFields(issues: { path: string[]; message: string }[]): HttpError {
  return invalid(issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; "), issues);
}

/** Parses with `schema`, or a 400 `invalid_request` listing every issue (paths, never values). */
export function parseOr400<T extends z.ZodType>(schema: T, raw: unknown, prefix: string[] = []): z.infer<T> {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({
    path: [...prefix, ...i.path.map(String)],
    message: i.message,
  }));
  throw invalidFields(issues);
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
    throw invalidFields(issues);
  }
  return parseOr400(schema, raw, prefix);
}

/** Scope name of a caller in idempotency records and rate-limit buckets. */
export const callerScope = (caller: Caller) => `${caller.kind}:${caller.id}`;

/** Normalizes the contact identifiers; an invalid identifier is a 400 naming the field. Traits pass as they are. */
export function normalizeContact(
  contact: TrackBody["contact"],
  country: string,
  prefix: string[] = [],
): RawEventV1["contact"] {
  if (!contact) return {};
  const { values, problems } = normalizeIdentifiers(contact, country);
  if (problems.length > 0) {
    throw invalidFields(problems.map((p) => ({ path: [...prefix, "contact", p.field], message: p.reason })));
  }
  const out: RawEventV1["contact"] = { ...values };
  if (contact.name) out.name = contact.name;
  if (contact.traits !== undefined) out.traits = contact.traits;
  return out;
}

/** A validated, authorized event of a request, before its id is known (keyed events get a deterministic one). */
export interface PreparedEvent {
  body: TrackBody;
  business: BusinessAccess;
  contact: RawEventV1["contact"];
  /** The idempotency key, and the hash of the body it came with (same key, other body: 422). */
  idempotency: { key: string; requestHash: string } | undefined;
}

/** What became of one prepared event (SPEC 4). */
export type AcceptOutcome =
  | { kind: "accepted"; eventId: string }
  /** Its key was used before with the same body and that event reached Kafka: nothing new was sent. */
  | { kind: "replay"; eventId: string }
  /** Its key was used before with another body. */
  | { kind: "mismatch" }
  /** Its key is claimed by a request still in flight. */
  | { kind: "in_flight"; retryAfterSeconds: number };

/** An outcome that refuses its event. */
export type Refused = Extract<AcceptOutcome, { kind: "mismatch" | "in_flight" }>;

/**
 * The answer to a refused event: 422 for another body, 409 with Retry-After while in flight. `keyName` is how the
 * client sent the key (`Idempotency-Key`, `idempotency_key`).
 */
export function refusal(outcome: Refused, keyName: string): HttpError {
  if (outcome.kind === "mismatch") {
    return new HttpError(422, "idempotency_mismatch", `this ${keyName} was used with a different body`);
  }
  return new HttpError(409, "idempotency_in_flight", `a request with this ${keyName} is in flight`, {
    headers: { "Retry-After": String(outcome.retryAfterSeconds) },
  });
}

export interface IngestOptions {
  producer: EventProducer;
  idempotency: IdempotencyStore;
  limiter: RateLimiter;
  limits: RateLimits;
  logger: Logger;
  logHashSecret: string;
  metrics: Metrics;
  /** Value bytes of an events.raw.v1 message (schema-registry framed JSON in production). */
  encodeRawEvent: (event: RawEventV1) => Buffer | string;
  /** The topic raw events are produced to (events.raw.v1 but for the bench's own copy). */
  rawTopic: string;
}

/**
 * What the routes share: the caller's rate limit, the tenant check of an event, and the one path by which events
 * are accepted (`accept`): a `/v1/track` event is a batch of one.
 */
export class Ingest {
  readonly logger: Logger;
  readonly metrics: Metrics;

  constructor(private readonly options: IngestOptions) {
    this.logger = options.logger;
    this.metrics = options.metrics;
  }

  /**
   * Takes `cost` events from the caller's rate limit: 429 `rate_limited` with Retry-After and RateLimit headers
   * when over it. Returns the headers to put on the successful answer.
   */
  rateLimit(caller: Caller, cost: number): Record<string, string> {
    const { limits, limiter, metrics } = this.options;
    const limit = caller.kind === "user" ? limits.userPerSecond : limits.keyPerSecond(caller.business.plan);
    const decision = limiter.take(callerScope(caller), limit, cost);
    const headers = rateLimitHeaders(decision);
    if (!decision.allowed) {
      metrics.rateLimited.inc({ caller_kind: caller.kind });
      throw new HttpError(429, "rate_limited", `rate limit of ${limit} events/s exceeded`, { headers });
    }
    return headers;
  }

  /**
   * Authorizes a parsed event for its business and normalizes its contact (`at`: where it sits in the request, for
   * issue paths). `raw` is the body as sent, whose canonical hash a key is bound to.
   */
  async prepare(
    caller: Caller,
    body: TrackBody,
    raw: unknown,
    idempotencyKey: string | undefined,
    at: string[] = [],
  ): Promise<PreparedEvent> {
    const business = await this.resolveBusiness(caller, body);
    const contact = normalizeContact(body.contact, business.defaultCountry, at);
    const idempotency =
      idempotencyKey === undefined
        ? undefined
        : { key: idempotencyKey, requestHash: sha256(canonicalJson(raw)) };
    return { body, business, contact, idempotency };
  }

  /**
   * Accepts prepared events, an outcome per event in their order. Keyed events are claimed (one call per business;
   * the store coalesces them, and answers once the claims are durable), then every new event goes to Kafka in one
   * send, in request order, and returns only after acks=all; then their keys are marked done (not awaited). If a
   * claim or Kafka fails, the claims taken are released and the error thrown (503): nothing of the request was
   * accepted.
   */
  async accept(caller: Caller, events: PreparedEvent[], requestId: string): Promise<AcceptOutcome[]> {
    const { idempotency, metrics } = this.options;
    const scope = callerScope(caller);
    const outcomes: AcceptOutcome[] = new Array(events.length);
    const toSend: { index: number; event: RawEventV1 }[] = [];
    const keyedByBusiness = new Map<string, number[]>();
    events.forEach((prepared, index) => {
      if (prepared.idempotency === undefined) {
        toSend.push({ index, event: this.buildEvent(prepared, caller, randomUUID()) });
        return;
      }
      const indexes = keyedByBusiness.get(prepared.business.businessId);
      if (indexes) indexes.push(index);
      else keyedByBusiness.set(prepared.business.businessId, [index]);
    });

    const claimedIds = new Map<string, string[]>();
    const claims = await Promise.allSettled(
      [...keyedByBusiness].map(async ([businessId, indexes]) => {
        const keyed = indexes.map((index) => events[index]!.idempotency!);
        const claimed = await idempotency.claim(businessId, scope, keyed);
        const ids: string[] = [];
        claimed.forEach((outcome, i) => {
          const index = indexes[i]!;
          if (outcome.kind !== "claimed") {
            outcomes[index] = outcome;
            return;
          }
          toSend.push({ index, event: this.buildEvent(events[index]!, caller, outcome.eventId) });
          ids.push(outcome.eventId);
        });
        if (ids.length > 0) claimedIds.set(businessId, ids);
      }),
    );
    const failedClaim = claims.find((result) => result.status === "rejected");
    if (failedClaim) {
      await this.release(scope, claimedIds);
      throw failedClaim.reason;
    }

    toSend.sort((a, b) => a.index - b.index);
    try {
      await this.produce(toSend.map((s) => s.event));
    } catch (error) {
      await this.release(scope, claimedIds);
      throw error;
    }
    // Not awaited: the answer does not wait for the bookkeeping (see markDone).
    for (const [businessId, ids] of claimedIds) this.markDone(businessId, scope, ids, requestId);
    for (const { index, event } of toSend) outcomes[index] = { kind: "accepted", eventId: event.event_id };
    metrics.events.inc({ outcome: "accepted" }, toSend.length);
    const replays = outcomes.filter((o) => o.kind === "replay").length;
    if (replays > 0) metrics.events.inc({ outcome: "idempotent_replay" }, replays);
    return outcomes;
  }

  /**
   * The business an event is for: `business_id` in the body, else `props.business_id` (seed compatibility), else
   * the caller's only business. Someone else's business is 403 and nothing is enqueued.
   */
  private async resolveBusiness(caller: Caller, body: TrackBody): Promise<BusinessAccess> {
    const fromProps = body.props?.business_id;
    const named = body.business_id ?? (typeof fromProps === "string" ? fromProps : undefined);
    const allowed = caller.kind === "ingest_key" ? [caller.business] : await caller.businesses();
    if (named === undefined) {
      if (allowed.length === 1) return allowed[0]!;
      if (allowed.length === 0) throw this.forbidden(caller, undefined);
      throw new HttpError(
        400,
        "business_required",
        "caller belongs to several businesses; name one in business_id",
      );
    }
    const match = allowed.find((b) => b.businessId === named);
    if (!match) throw this.forbidden(caller, named);
    return match;
  }

  private forbidden(caller: Caller, businessId: string | undefined): HttpError {
    this.options.logger.warn(
      {
        caller_kind: caller.kind,
        caller_hash: hashId(this.options.logHashSecret, caller.id),
        business_id: businessId,
      },
      "crm_track_unauthorized_business",
    );
    return new HttpError(403, "forbidden_business", "caller may not write for this business");
  }

  private buildEvent(prepared: PreparedEvent, caller: Caller, eventId: string): RawEventV1 {
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
      source: { kind: caller.kind, id_hash: callerHash(this.options.logHashSecret, caller.id) },
    };
  }

  /** Produces events to the raw topic keyed as SPEC 5; resolves only after acks=all, else throws (503). */
  private async produce(events: RawEventV1[]): Promise<void> {
    if (events.length === 0) return;
    const { producer, encodeRawEvent, metrics, rawTopic } = this.options;
    const messages: OutgoingMessage[] = events.map((event) => ({
      key: partitionKey(event.business_id, event.contact, event.event_id),
      value: encodeRawEvent(event),
    }));
    const stop = metrics.produceSeconds.startTimer();
    try {
      await producer.send(rawTopic, messages);
      stop({ outcome: "ok" });
    } catch (error) {
      stop({ outcome: "error" });
      throw error;
    }
  }

  /**
   * Frees claims whose events were not sent, so the client's retry proceeds at once. If this fails too, each claim's
   * lease expires and the retry takes it over with the same event id.
   */
  private async release(scope: string, claimedIds: Map<string, string[]>): Promise<void> {
    await Promise.all(
      [...claimedIds].map(([businessId, ids]) =>
        this.options.idempotency.release(businessId, scope, ids).catch(() => {}),
      ),
    );
  }

  /**
   * Records that keyed events reached Kafka, after the answer (the store orders it before any later claim of the
   * same keys in this process). The events are acknowledged whatever happens here: on failure the claim stays in
   * flight until its lease ends, and a retry then re-sends the same event id (the worker dedupes).
   */
  private markDone(businessId: string, scope: string, eventIds: string[], requestId: string): void {
    this.options.idempotency.complete(businessId, scope, eventIds).catch((error: unknown) => {
      this.options.logger.warn(
        { request_id: requestId, business_id: businessId, err: error },
        "idempotency bookkeeping failed after Kafka ack",
      );
    });
  }
}

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
