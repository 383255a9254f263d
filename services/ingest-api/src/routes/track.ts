import { HttpError } from "@crm/errors";
import type { Context } from "hono";
import { Hono } from "hono";
import { type AppVariables, bodySource, readJsonBody } from "../http.ts";
import { canonicalJson, checkIdempotencyKey, sha256 } from "../idempotency.ts";
import {
  buildEvent,
  callerScope,
  enforceRateLimit,
  type IngestDeps,
  newEventId,
  normalizeContact,
  parseEventOr400,
  produce,
  resolveBusiness,
} from "../ingest.ts";
import { MAX_TRACK_BODY_BYTES, TrackBody } from "../track-schema.ts";

/** `POST /v1/track`: one event, 202 only after Kafka acknowledged it (SPEC 4). */
export function trackRoutes(deps: IngestDeps) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/track", async (c) => {
    const caller = c.get("caller");
    const raw = await readJsonBody(bodySource(c), MAX_TRACK_BODY_BYTES);
    const limitHeaders = enforceRateLimit(caller, 1, deps);
    for (const [name, value] of Object.entries(limitHeaders)) c.header(name, value);
    const body = parseEventOr400(TrackBody, raw);
    const headerKey = c.req.header("idempotency-key");
    const idempotencyKey =
      headerKey !== undefined
        ? checkIdempotencyKey(headerKey, ["Idempotency-Key"])
        : body.props?.idemKey !== undefined
          ? checkIdempotencyKey(body.props.idemKey, ["props", "idemKey"])
          : undefined;
    const business = await resolveBusiness(caller, body, deps);
    const contact = normalizeContact(body.contact, business.defaultCountry);
    const prepared = { body, business, contact, idempotencyKey };

    if (idempotencyKey === undefined) {
      const event = buildEvent(prepared, caller, newEventId(), deps);
      await produce([event], deps);
      return accepted(c, deps, event.event_id, event.business_id);
    }

    const scope = callerScope(caller);
    const [outcome] = await deps.idempotency.claim(business.businessId, scope, [
      { key: idempotencyKey, requestHash: sha256(canonicalJson(raw)) },
    ]);
    switch (outcome?.kind) {
      case "replay":
        deps.metrics.events.inc({ outcome: "idempotent_replay" });
        return c.json({ ok: true, idempotent: true, event_id: outcome.eventId }, 200);
      case "mismatch":
        throw new HttpError(
          422,
          "idempotency_mismatch",
          "this Idempotency-Key was used with a different body",
        );
      case "in_flight":
        throw new HttpError(
          409,
          "idempotency_in_flight",
          "a request with this Idempotency-Key is in flight",
          {
            headers: { "Retry-After": String(outcome.retryAfterSeconds) },
          },
        );
      case "claimed":
        break;
      default:
        throw new Error("idempotency store returned no outcome");
    }
    const event = buildEvent(prepared, caller, outcome.eventId, deps);
    try {
      await produce([event], deps);
    } catch (error) {
      // Nothing was acknowledged: free the key so the client's retry proceeds at once. If this fails too, the
      // claim's lease expires and the retry takes it over with the same event id.
      await deps.idempotency.release(business.businessId, scope, [idempotencyKey]).catch(() => {});
      throw error;
    }
    await markDone(deps, business.businessId, scope, [idempotencyKey], c.get("requestId"));
    return accepted(c, deps, event.event_id, event.business_id);
  });

  return app;
}

function accepted(
  c: Context<{ Variables: AppVariables }>,
  deps: IngestDeps,
  eventId: string,
  businessId: string,
) {
  deps.metrics.events.inc({ outcome: "accepted" });
  deps.logger.info(
    { event_id: eventId, business_id: businessId, request_id: c.get("requestId") },
    "event_tracked",
  );
  return c.json({ ok: true, event_id: eventId }, 202);
}

/**
 * Records that keyed events reached Kafka. The events are acknowledged whatever happens here: on failure the
 * claim stays in flight until its lease ends, and a retry then re-sends the same event id (the worker dedupes).
 */
export async function markDone(
  deps: IngestDeps,
  businessId: string,
  scope: string,
  keys: string[],
  requestId: string,
): Promise<void> {
  try {
    await deps.idempotency.complete(businessId, scope, keys);
  } catch (error) {
    deps.logger.warn(
      { request_id: requestId, business_id: businessId, err: error },
      "idempotency bookkeeping failed after Kafka ack",
    );
  }
}
