import { createHash } from "node:crypto";
import { eventTypeOf, type PropertyFilter, type TriggerKind } from "@crm/automations";
import type { PoolClient } from "@crm/db";
import type { SegmentDefinition } from "@crm/segment-definitions";
import { type ContactSnapshot, contactPasses, passes, propsPass } from "./conditions.ts";
import type { Cause } from "./decode-inputs.ts";

export type MatchOutcome =
  | { outcome: "unmatched" }
  | { outcome: "unknown_contact" }
  | { outcome: "matched"; messages: number; deliveries: number; dueNow: boolean };

interface TriggerRow {
  id: string;
  name: string;
  kind: TriggerKind;
  params: Record<string, unknown>;
  contact_filter: SegmentDefinition | null;
  once_per_contact: boolean;
  delay_seconds: number;
}

/** The webhook-id of a trigger fired by a cause: a uuid from their hash, the same on every redelivery. */
export function messageIdOf(triggerId: string, causeId: string): string {
  const hex = createHash("sha256").update(`${triggerId}\u0000${causeId}`).digest("hex");
  // version 8 (custom) and the RFC variant bits, so it is a well-formed uuid
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${((Number.parseInt(hex[16]!, 16) & 3) | 8).toString(16)}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function kindsOf(cause: Cause): TriggerKind[] {
  switch (cause.source) {
    case "contact":
      if (cause.change === "created") return ["contact.created", "contact.changed"];
      if (cause.change === "merged") return ["contact.merged", "contact.changed"];
      if (cause.change === "updated") return ["contact.changed"];
      return [];
    case "membership":
      return [cause.change === "entered" ? "segment.entered" : "segment.exited"];
    case "event":
      return ["event"];
  }
}

/** Does the trigger's own parameter (field, segment, event type and where) select this cause? */
function selects(trigger: TriggerRow, cause: Cause): boolean {
  const p = trigger.params;
  switch (trigger.kind) {
    case "contact.changed": {
      if (cause.source !== "contact" || !cause.changedFields.includes(p.field as string)) return false;
      if (p.to === undefined) return true;
      const field = p.field as string;
      const now = field.startsWith("traits.")
        ? cause.contact.traits?.[field.slice(7)]
        : (cause.contact as Record<string, unknown>)[field];
      return passes(now, "=", p.to);
    }
    case "segment.entered":
    case "segment.exited":
      return cause.source === "membership" && cause.segmentId === p.segment_id;
    case "event":
      return (
        cause.source === "event" &&
        cause.type === p.type &&
        propsPass(p.where as PropertyFilter[], cause.props)
      );
    default:
      return true;
  }
}

function causePayload(cause: Cause): Record<string, unknown> {
  switch (cause.source) {
    case "contact": {
      const v = cause.value;
      return {
        change: v.change,
        changed_fields: v.changed_fields,
        version: v.version,
        ...(v.merged_from ? { merged_from: v.merged_from } : {}),
        cause_event_id: v.cause_event_id,
        occurred_at: v.occurred_at,
      };
    }
    case "membership":
      return {
        segment_id: cause.segmentId,
        segment_version: cause.segmentVersion,
        change: cause.change,
        at: cause.at,
        ...(cause.cause === undefined ? {} : { cause: cause.cause }),
      };
    case "event":
      return { event_id: cause.eventId, type: cause.type, occurred_at: cause.at, props: cause.props };
  }
}

/** The stored contacts among `ids` (one query): what filters of segment and event triggers see. */
async function contactRows(
  client: PoolClient,
  businessId: string,
  ids: string[],
): Promise<Map<string, ContactSnapshot>> {
  const { rows } = await client.query(
    `SELECT id, external_id, email, phone, name, first_seen_at, last_seen_at, traits
     FROM crm_contacts WHERE business_id = $1 AND id = ANY($2::uuid[])`,
    [businessId, ids],
  );
  const found = new Map<string, ContactSnapshot>();
  for (const row of rows) {
    const snapshot: ContactSnapshot = {};
    for (const key of ["external_id", "email", "phone", "name"] as const)
      if (row[key] !== null) snapshot[key] = row[key];
    snapshot.first_seen_at = row.first_seen_at.toISOString();
    snapshot.last_seen_at = row.last_seen_at.toISOString();
    if (Object.keys(row.traits).length > 0) snapshot.traits = row.traits;
    found.set(row.id, snapshot);
  }
  return found;
}

interface Candidate {
  index: number;
  id: string;
  trigger: TriggerRow;
  cause: Cause;
  payload: unknown;
}

/**
 * Fires the triggers that causes of ONE business select, inside the caller's transaction with that business as
 * tenant, in a fixed number of statements whatever the number of causes: per trigger whose contact filter passes,
 * one message with a deterministic id (INSERT ... ON CONFLICT DO NOTHING, so a redelivered cause changes nothing)
 * and one delivery per enabled endpoint whose filter takes its type, due after the trigger's delay. "Once per
 * contact" keeps the first message's id per (trigger, contact). Returns one outcome per cause, in order.
 */
export async function matchCauses(
  client: PoolClient,
  businessId: string,
  causes: Cause[],
  queue = "automations",
): Promise<MatchOutcome[]> {
  const outcomes: MatchOutcome[] = causes.map(() => ({ outcome: "unmatched" }));
  const kinds = [...new Set(causes.flatMap(kindsOf))];
  if (kinds.length === 0) return outcomes;
  const { rows: triggers } = await client.query<TriggerRow>(
    `SELECT id, name, kind, params, contact_filter, once_per_contact, delay_seconds FROM automation_triggers
     WHERE business_id = $1 AND enabled AND kind = ANY($2)`,
    [businessId, kinds],
  );
  if (triggers.length === 0) return outcomes;
  const selectedBy = causes.map((cause) => {
    const mine = kindsOf(cause);
    return triggers.filter((t) => mine.includes(t.kind) && selects(t, cause));
  });
  const needed = [...new Set(causes.filter((_, i) => selectedBy[i]!.length > 0).map((c) => c.contactId))];
  if (needed.length === 0) return outcomes;
  // The contact must exist (messages reference it); a contact.updated change carries its own snapshot.
  const stored = await contactRows(client, businessId, needed);

  const candidates: Candidate[] = [];
  causes.forEach((cause, index) => {
    if (selectedBy[index]!.length === 0) return;
    const row = stored.get(cause.contactId);
    if (!row) {
      outcomes[index] = { outcome: "unknown_contact" };
      return;
    }
    outcomes[index] = { outcome: "matched", messages: 0, deliveries: 0, dueNow: false };
    const contact = cause.source === "contact" ? cause.contact : row;
    for (const trigger of selectedBy[index]!) {
      if (!contactPasses(trigger.contact_filter, contact)) continue;
      const payload = {
        type: eventTypeOf(trigger.kind),
        timestamp: cause.at,
        data: {
          business_id: businessId,
          trigger: { id: trigger.id, name: trigger.name },
          contact_id: cause.contactId,
          contact,
          cause: causePayload(cause),
        },
      };
      candidates.push({ index, id: messageIdOf(trigger.id, cause.causeId), trigger, cause, payload });
    }
  });
  if (candidates.length === 0) return outcomes;

  let kept = candidates;
  const once = candidates.filter((c) => c.trigger.once_per_contact);
  if (once.length > 0) {
    const pairs = JSON.stringify(once.map((c) => ({ t: c.trigger.id, c: c.cause.contactId, m: c.id })));
    await client.query(
      `INSERT INTO automation_trigger_contacts (business_id, trigger_id, contact_id, message_id)
       SELECT $1, p.t, p.c, p.m FROM jsonb_to_recordset($2::jsonb) AS p(t uuid, c uuid, m uuid)
       ON CONFLICT (trigger_id, contact_id) DO NOTHING`,
      [businessId, pairs],
    );
    const { rows: firsts } = await client.query<{
      trigger_id: string;
      contact_id: string;
      message_id: string;
    }>(
      `SELECT trigger_id, contact_id, message_id FROM automation_trigger_contacts
       WHERE business_id = $1 AND (trigger_id, contact_id) IN (
         SELECT p.t, p.c FROM jsonb_to_recordset($2::jsonb) AS p(t uuid, c uuid))`,
      [businessId, pairs],
    );
    const first = new Map(firsts.map((r) => [`${r.trigger_id}/${r.contact_id}`, r.message_id]));
    kept = candidates.filter(
      (c) => !c.trigger.once_per_contact || first.get(`${c.trigger.id}/${c.cause.contactId}`) === c.id,
    );
  }
  if (kept.length === 0) return outcomes;

  const { rows: inserted } = await client.query<{ id: string; deliveries: number; delay: number }>(
    `WITH m AS (
       INSERT INTO automation_messages (id, business_id, trigger_id, contact_id, event_type, cause_id, payload)
       SELECT r.id, $1, r.trigger_id, r.contact_id, r.event_type, r.cause_id, r.payload
       FROM jsonb_to_recordset($2::jsonb) AS r(id uuid, trigger_id uuid, contact_id uuid, event_type text,
            cause_id text, payload jsonb)
       ON CONFLICT (id) DO NOTHING
       RETURNING id, event_type, trigger_id),
     d AS (
       INSERT INTO automation_deliveries (business_id, message_id, endpoint_id, next_attempt_at, queue)
       SELECT $1, m.id, e.id, now() + make_interval(secs => t.delay_seconds), $3
       FROM m JOIN automation_triggers t ON t.id = m.trigger_id
       JOIN automation_endpoints e ON e.business_id = $1 AND e.enabled
         AND (e.event_types IS NULL OR m.event_type = ANY (e.event_types))
       ON CONFLICT (message_id, endpoint_id) DO NOTHING
       RETURNING message_id)
     SELECT m.id, (SELECT count(*)::int FROM d WHERE d.message_id = m.id) AS deliveries, t.delay_seconds AS delay
     FROM m JOIN automation_triggers t ON t.id = m.trigger_id`,
    [
      businessId,
      JSON.stringify(
        kept.map((c) => ({
          id: c.id,
          trigger_id: c.trigger.id,
          contact_id: c.cause.contactId,
          event_type: eventTypeOf(c.trigger.kind),
          cause_id: c.cause.causeId.slice(0, 512),
          payload: c.payload,
        })),
      ),
      queue,
    ],
  );
  const byId = new Map(kept.map((c) => [c.id, c.index]));
  for (const row of inserted) {
    const outcome = outcomes[byId.get(row.id)!]!;
    if (outcome.outcome !== "matched") continue;
    outcome.messages++;
    outcome.deliveries += row.deliveries;
    if (row.delay === 0 && row.deliveries > 0) outcome.dueNow = true;
  }
  return outcomes;
}
