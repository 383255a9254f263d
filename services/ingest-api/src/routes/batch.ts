import { HttpError } from "@crm/errors";
import { Hono } from "hono";
import type { Caller } from "../auth.ts";
import { type AppVariables, bodySource, readJsonBody } from "../http.ts";
import { checkIdempotencyKey } from "../idempotency.ts";
import { type Ingest, type PreparedEvent, parseEventOr400, parseOr400, refusal } from "../ingest.ts";
import { BatchBody, BatchItem, MAX_BATCH_BODY_BYTES, MAX_BATCH_EVENTS } from "../track-schema.ts";

type ItemResult =
  | { ok: true; event_id: string; idempotent?: true }
  | { ok: false; error: { code: string; message: string; issues?: unknown[] } };

const errorResult = (error: HttpError): ItemResult => ({
  ok: false,
  error: {
    code: error.code,
    message: error.message,
    ...(error.details.issues ? { issues: error.details.issues } : {}),
  },
});

/** One item, validated and authorized on its own: a bad item becomes its error result, not the batch's. */
function prepareItem(ingest: Ingest, caller: Caller, raw: unknown, index: number): Promise<PreparedEvent> {
  const at = ["events", String(index)];
  const body = parseEventOr400(BatchItem, raw, at);
  const idempotencyKey =
    body.idempotency_key ??
    (body.props?.idemKey !== undefined
      ? checkIdempotencyKey(body.props.idemKey, [...at, "props", "idemKey"])
      : undefined);
  return ingest.prepare(caller, body, raw, idempotencyKey, at);
}

/** `POST /v1/batch`: up to 500 events, a result per item; 202 only after Kafka acknowledged every ok item. */
export function batchRoutes(ingest: Ingest) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/batch", async (c) => {
    const caller = c.get("caller");
    const raw = await readJsonBody(bodySource(c), MAX_BATCH_BODY_BYTES);
    const { events: items } = parseOr400(BatchBody, raw);
    if (items.length > MAX_BATCH_EVENTS) {
      throw new HttpError(413, "payload_too_large", `a batch holds at most ${MAX_BATCH_EVENTS} events`);
    }
    for (const [name, value] of Object.entries(ingest.rateLimit(caller, items.length))) c.header(name, value);

    const results: ItemResult[] = new Array(items.length);
    const prepared: { index: number; event: PreparedEvent }[] = [];
    await Promise.all(
      items.map(async (item, index) => {
        try {
          prepared.push({ index, event: await prepareItem(ingest, caller, item, index) });
        } catch (error) {
          if (!(error instanceof HttpError)) throw error;
          results[index] = errorResult(error);
        }
      }),
    );
    prepared.sort((a, b) => a.index - b.index);

    const outcomes = await ingest.accept(
      caller,
      prepared.map((p) => p.event),
      c.get("requestId"),
    );
    outcomes.forEach((outcome, i) => {
      const { index } = prepared[i]!;
      if (outcome.kind === "accepted") results[index] = { ok: true, event_id: outcome.eventId };
      else if (outcome.kind === "replay")
        results[index] = { ok: true, event_id: outcome.eventId, idempotent: true };
      else results[index] = errorResult(refusal(outcome, "idempotency_key"));
    });
    const accepted = outcomes.filter((o) => o.kind === "accepted").length;
    ingest.metrics.events.inc({ outcome: "rejected" }, results.filter((r) => !r.ok).length);
    ingest.logger.info({ request_id: c.get("requestId"), accepted, items: items.length }, "batch_tracked");
    return c.json({ ok: true, results }, 202);
  });

  return app;
}
