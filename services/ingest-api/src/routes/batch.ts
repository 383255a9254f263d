import { HttpError } from "@crm/errors";
import type { RawEventV1 } from "@crm/schemas";
import { Hono } from "hono";
import type { Caller } from "../auth.ts";
import { type AppVariables, bodySource, readJsonBody } from "../http.ts";
import { type ClaimOutcome, canonicalJson, checkIdempotencyKey, sha256 } from "../idempotency.ts";
import {
  buildEvent,
  callerScope,
  enforceRateLimit,
  type IngestDeps,
  newEventId,
  normalizeContact,
  type PreparedEvent,
  parseEventOr400,
  parseOr400,
  produce,
  resolveBusiness,
} from "../ingest.ts";
import { BatchBody, BatchItem, MAX_BATCH_BODY_BYTES, MAX_BATCH_EVENTS } from "../track-schema.ts";
import { markDone } from "./track.ts";

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
async function prepareItem(caller: Caller, raw: unknown, index: number, deps: IngestDeps) {
  const at = ["events", String(index)];
  const body = parseEventOr400(BatchItem, raw, at);
  const idemKey =
    body.idempotency_key ??
    (body.props?.idemKey !== undefined
      ? checkIdempotencyKey(body.props.idemKey, [...at, "props", "idemKey"])
      : undefined);
  const business = await resolveBusiness(caller, body, deps);
  const contact = normalizeContact(body.contact, business.defaultCountry, at);
  return { body, business, contact, idempotencyKey: idemKey, raw } satisfies PreparedEvent & { raw: unknown };
}

/** `POST /v1/batch`: up to 500 events, a result per item; 202 only after Kafka acknowledged every ok item. */
export function batchRoutes(deps: IngestDeps) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/batch", async (c) => {
    const caller = c.get("caller");
    const raw = await readJsonBody(bodySource(c), MAX_BATCH_BODY_BYTES);
    const { events: items } = parseOr400(BatchBody, raw);
    if (items.length > MAX_BATCH_EVENTS) {
      throw new HttpError(413, "payload_too_large", `a batch holds at most ${MAX_BATCH_EVENTS} events`);
    }
    const limitHeaders = enforceRateLimit(caller, items.length, deps);
    for (const [name, value] of Object.entries(limitHeaders)) c.header(name, value);

    const results: ItemResult[] = new Array(items.length);
    const prepared: { index: number; item: Awaited<ReturnType<typeof prepareItem>> }[] = [];
    await Promise.all(
      items.map(async (raw, index) => {
        try {
          prepared.push({ index, item: await prepareItem(caller, raw, index, deps) });
        } catch (error) {
          if (!(error instanceof HttpError)) throw error;
          results[index] = errorResult(error);
        }
      }),
    );

    // Keyed items are claimed per business, each business in one transaction.
    const scope = callerScope(caller);
    const toSend: { index: number; event: RawEventV1 }[] = [];
    const claimedKeys = new Map<string, string[]>();
    const keyedByBusiness = new Map<string, typeof prepared>();
    for (const entry of prepared) {
      if (entry.item.idempotencyKey === undefined) {
        toSend.push({ index: entry.index, event: buildEvent(entry.item, caller, newEventId(), deps) });
        continue;
      }
      const list = keyedByBusiness.get(entry.item.business.businessId) ?? [];
      list.push(entry);
      keyedByBusiness.set(entry.item.business.businessId, list);
    }
    for (const [businessId, entries] of keyedByBusiness) {
      const outcomes = await deps.idempotency.claim(
        businessId,
        scope,
        entries.map((e) => ({ key: e.item.idempotencyKey!, requestHash: sha256(canonicalJson(e.item.raw)) })),
      );
      entries.forEach((entry, i) => {
        const outcome = outcomes[i] as ClaimOutcome;
        if (outcome.kind === "claimed") {
          toSend.push({ index: entry.index, event: buildEvent(entry.item, caller, outcome.eventId, deps) });
          claimedKeys.set(businessId, [...(claimedKeys.get(businessId) ?? []), entry.item.idempotencyKey!]);
        } else if (outcome.kind === "replay") {
          results[entry.index] = { ok: true, event_id: outcome.eventId, idempotent: true };
        } else if (outcome.kind === "mismatch") {
          results[entry.index] = errorResult(
            new HttpError(422, "idempotency_mismatch", "this idempotency_key was used with a different body"),
          );
        } else {
          results[entry.index] = errorResult(
            new HttpError(409, "idempotency_in_flight", "an event with this idempotency_key is in flight"),
          );
        }
      });
    }

    try {
      await produce(
        toSend.map((s) => s.event),
        deps,
      );
    } catch (error) {
      await Promise.all(
        [...claimedKeys].map(([businessId, keys]) =>
          deps.idempotency.release(businessId, scope, keys).catch(() => {}),
        ),
      );
      throw error;
    }
    await Promise.all(
      [...claimedKeys].map(([businessId, keys]) =>
        markDone(deps, businessId, scope, keys, c.get("requestId")),
      ),
    );
    for (const { index, event } of toSend) results[index] = { ok: true, event_id: event.event_id };
    deps.metrics.events.inc({ outcome: "accepted" }, toSend.length);
    deps.metrics.events.inc({ outcome: "rejected" }, results.filter((r) => !r.ok).length);
    deps.logger.info(
      { request_id: c.get("requestId"), accepted: toSend.length, items: items.length },
      "batch_tracked",
    );
    return c.json({ ok: true, results }, 202);
  });

  return app;
}
