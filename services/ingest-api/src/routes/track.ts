import { randomUUID } from "node:crypto";
import { HttpError } from "@crm/errors";
import { normalizeEmail, normalizeExternalId, normalizePhone, partitionKey } from "@crm/identity";
import { type EventProducer, TOPICS } from "@crm/kafka";
import { hashId, type Logger } from "@crm/logger";
import type { RawEventV1 } from "@crm/schemas";
import { Hono } from "hono";
import type { Caller } from "../auth.ts";
import { type AppVariables, readJsonBody } from "../http.ts";
import type { BusinessAccess } from "../tenant-directory.ts";
import { MAX_TRACK_BODY_BYTES, TrackBody } from "../track-schema.ts";

export interface TrackDeps {
  producer: EventProducer;
  logger: Logger;
  logHashSecret: string;
}

function invalid(message: string, issues: unknown[] = []): HttpError {
  return new HttpError(400, "invalid_request", message, { issues });
}

/**
 * The business an event is for: `business_id` in the body, else `props.business_id` (seed compatibility), else
 * the caller's only business. Someone else's business is 403 and nothing is enqueued.
 */
async function resolveBusiness(caller: Caller, body: TrackBody, deps: TrackDeps): Promise<BusinessAccess> {
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

function forbidden(caller: Caller, deps: TrackDeps, businessId: string | undefined): HttpError {
  deps.logger.warn(
    { caller_kind: caller.kind, caller_hash: hashId(deps.logHashSecret, caller.id), business_id: businessId },
    "crm_track_unauthorized_business",
  );
  return new HttpError(403, "forbidden_business", "caller may not write for this business");
}

/** Normalizes the contact identifiers; an invalid email or phone is a 400 naming the field. */
function normalizeContact(contact: TrackBody["contact"], country: string): RawEventV1["contact"] {
  if (!contact) return {};
  const out: RawEventV1["contact"] = {};
  const issues: { path: string[]; message: string }[] = [];
  if (contact.external_id !== undefined) {
    const r = normalizeExternalId(contact.external_id);
    if (r.ok) out.external_id = r.value;
    else issues.push({ path: ["contact", "external_id"], message: r.reason });
  }
  if (contact.email !== undefined) {
    const r = normalizeEmail(contact.email);
    if (r.ok) out.email = r.value;
    else issues.push({ path: ["contact", "email"], message: r.reason });
  }
  if (contact.phone !== undefined) {
    const r = normalizePhone(contact.phone, country);
    if (r.ok) out.phone = r.value;
    else issues.push({ path: ["contact", "phone"], message: r.reason });
  }
  if (contact.name) out.name = contact.name;
  if (issues.length > 0)
    throw invalid(issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "), issues);
  return out;
}

export function trackRoutes(deps: TrackDeps) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/track", async (c) => {
    const raw = await readJsonBody(c.req.raw, MAX_TRACK_BODY_BYTES);
    const parsed = TrackBody.safeParse(raw);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message }));
      throw invalid(issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; "), issues);
    }
    const body = parsed.data;
    const caller = c.get("caller");
    const business = await resolveBusiness(caller, body, deps);
    const contact = normalizeContact(body.contact, business.defaultCountry);
    const receivedAt = new Date().toISOString();
    const event: RawEventV1 = {
      event_id: randomUUID(),
      business_id: business.businessId,
      type: body.type,
      contact,
      props: body.props ?? {},
      occurred_at: body.occurred_at ? new Date(body.occurred_at).toISOString() : receivedAt,
      received_at: receivedAt,
      source: { kind: caller.kind, id_hash: hashId(deps.logHashSecret, caller.id) },
    };
    // 2xx only after Kafka acknowledged with acks=all; a failure here becomes 503 in onError.
    await deps.producer.send(TOPICS.raw, [
      { key: partitionKey(event.business_id, contact, event.event_id), value: JSON.stringify(event) },
    ]);
    deps.logger.info(
      {
        event_id: event.event_id,
        business_id: event.business_id,
        type: event.type,
        request_id: c.get("requestId"),
      },
      "event_tracked",
    );
    return c.json({ ok: true, event_id: event.event_id }, 202);
  });

  return app;
}
