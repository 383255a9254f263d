import { Hono } from "hono";
import { type AppVariables, bodySource, readJsonBody, requestHeader } from "../http.ts";
import { checkIdempotencyKey } from "../idempotency.ts";
import { type Ingest, parseEventOr400, refusal } from "../ingest.ts";
import { MAX_TRACK_BODY_BYTES, TrackBody } from "../track-schema.ts";

/** `POST /v1/track`: one event, 202 only after Kafka acknowledged it (SPEC 4). */
export function trackRoutes(ingest: Ingest) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/track", async (c) => {
    const caller = c.get("caller");
    const raw = await readJsonBody(bodySource(c), MAX_TRACK_BODY_BYTES);
    for (const [name, value] of Object.entries(ingest.rateLimit(caller, 1))) c.header(name, value);
    const body = parseEventOr400(TrackBody, raw);
    const headerKey = requestHeader(c, "idempotency-key");
    const idempotencyKey =
      headerKey !== undefined
        ? checkIdempotencyKey(headerKey, ["Idempotency-Key"])
        : body.props?.idemKey !== undefined
          ? checkIdempotencyKey(body.props.idemKey, ["props", "idemKey"])
          : undefined;
    const prepared = await ingest.prepare(caller, body, raw, idempotencyKey);

    const [outcome] = await ingest.accept(caller, [prepared], c.get("requestId"));
    if (!outcome) throw new Error("accept returned no outcome");
    switch (outcome.kind) {
      case "accepted":
        ingest.logger.info(
          {
            event_id: outcome.eventId,
            business_id: prepared.business.businessId,
            request_id: c.get("requestId"),
          },
          "event_tracked",
        );
        return c.json({ ok: true, event_id: outcome.eventId }, 202);
      case "replay":
        return c.json({ ok: true, idempotent: true, event_id: outcome.eventId }, 200);
      default:
        throw refusal(outcome, "Idempotency-Key");
    }
  });

  return app;
}
