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

async function contactRow(client: PoolClient, cause: Cause): Promise<ContactSnapshot | undefined> {
  const { rows } = await client.query(
    `SELECT external_id, email, phone, name, first_seen_at, last_seen_at, traits
     FROM crm_contacts WHERE business_id = $1 AND id = $2`,
    [cause.businessId, cause.contactId],
  );
  const row = rows[0];
  if (!row) return undefined;
  const snapshot: ContactSnapshot = {};
  for (const key of ["external_id", "email", "phone", "name"] as const)
    if (row[key] !== null) snapshot[key] = row[key];
  snapshot.first_seen_at = row.first_seen_at.toISOString();
  snapshot.last_seen_at = row.last_seen_at.toISOString();
  if (Object.keys(row.traits).length > 0) snapshot.traits = row.traits;
  return snapshot;
}

/**
 * Fires the business's triggers this cause selects, inside the caller's transaction with the business as tenant:
 * per trigger whose contact filter passes, one message with a deterministic id (INSERT ... ON CONFLICT DO NOTHING,
 * so a redelivered cause changes nothing) and one delivery per enabled endpoint whose filter takes its type, due
 * after the trigger's delay. "Once per contact" holds the first message's id per (trigger, contact).
 */
export async function matchCause(client: PoolClient, cause: Cause): Promise<MatchOutcome> {
  const kinds = kindsOf(cause);
  if (kinds.length === 0) return { outcome: "unmatched" };
  const { rows } = await client.query<TriggerRow>(
    `SELECT id, name, kind, params, contact_filter, once_per_contact, delay_seconds FROM automation_triggers
     WHERE business_id = $1 AND enabled AND kind = ANY($2)`,
    [cause.businessId, kinds],
  );
  const selected = rows.filter((t) => selects(t, cause));
  if (selected.length === 0) return { outcome: "unmatched" };

  // The contact must exist (the messages reference it); a contact.updated change carries its own snapshot.
  const stored = await contactRow(client, cause);
  if (!stored) return { outcome: "unknown_contact" };
  const contact = cause.source === "contact" ? cause.contact : stored;

  let messages = 0;
  let deliveries = 0;
  let dueNow = false;
  for (const trigger of selected) {
    if (!contactPasses(trigger.contact_filter, contact)) continue;
    const id = messageIdOf(trigger.id, cause.causeId);
    if (trigger.once_per_contact) {
      const first = await client.query<{ message_id: string }>(
        `WITH ins AS (
           INSERT INTO automation_trigger_contacts (business_id, trigger_id, contact_id, message_id)
           VALUES ($1, $2, $3, $4) ON CONFLICT (trigger_id, contact_id) DO NOTHING RETURNING message_id)
         SELECT message_id FROM ins
         UNION ALL SELECT message_id FROM automation_trigger_contacts WHERE trigger_id = $2 AND contact_id = $3
         LIMIT 1`,
        [cause.businessId, trigger.id, cause.contactId, id],
      );
      if (first.rows[0]?.message_id !== id) continue;
    }
    const eventType = eventTypeOf(trigger.kind);
    const payload = {
      type: eventType,
      timestamp: cause.at,
      data: {
        business_id: cause.businessId,
        trigger: { id: trigger.id, name: trigger.name },
        contact_id: cause.contactId,
        contact,
        cause: causePayload(cause),
      },
    };
    const inserted = await client.query(
      `INSERT INTO automation_messages (id, business_id, trigger_id, contact_id, event_type, cause_id, payload)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING id`,
      [
        id,
        cause.businessId,
        trigger.id,
        cause.contactId,
        eventType,
        cause.causeId.slice(0, 512),
        JSON.stringify(payload),
      ],
    );
    if (inserted.rowCount === 0) continue;
    messages++;
    const fanned = await client.query(
      `INSERT INTO automation_deliveries (business_id, message_id, endpoint_id, next_attempt_at)
       SELECT $1, $2, e.id, now() + make_interval(secs => $4)
       FROM automation_endpoints e
       WHERE e.business_id = $1 AND e.enabled AND (e.event_types IS NULL OR $3 = ANY (e.event_types))
       ON CONFLICT (message_id, endpoint_id) DO NOTHING`,
      [cause.businessId, id, eventType, trigger.delay_seconds],
    );
    deliveries += fanned.rowCount ?? 0;
    if (trigger.delay_seconds === 0 && (fanned.rowCount ?? 0) > 0) dueNow = true;
  }
  return { outcome: "matched", messages, deliveries, dueNow };
}
