import { type Pool, sqlLiteral, transaction } from "@crm/db";
import { evaluationQuery } from "@crm/segment-definitions";
import { type ApplyOutcome, applyResults, type ChangeCause, lockContacts } from "./apply-results.ts";
import { type SegmentCache, signatureSql } from "./segment-cache.ts";

/** "Contact X may have changed": from an applied event (of `eventType`), a contact change, or the sweep. */
export interface ContactTrigger {
  contactId: string;
  cause: ChangeCause;
  /** Event types applied to it (cause event): segments reading them or the activity times are evaluated. */
  eventTypes?: Set<string>;
  /** Contact fields that changed (contact.updated.v1's changed_fields): segments reading one are evaluated. */
  fields?: Set<string>;
  /** These segments (the sweep's due rows), besides those chosen by the other fields. */
  segments?: Set<string>;
  /** Any contact change or merge: every active segment. */
  all?: boolean;
}

/**
 * Re-evaluates the contacts of ONE business in one transaction (tenant set): locks them, reads the business's
 * active segments (after the locks), evaluates the segments each trigger can affect, and writes the changes with
 * their outbox rows. Idempotent: the same triggers again change nothing.
 */
export async function reevaluateContacts(
  deps: { pool: Pool; cache: SegmentCache; onTiming?: (tag: string, ms: number) => void },
  businessId: string,
  triggers: readonly ContactTrigger[],
): Promise<ApplyOutcome> {
  return transaction(
    deps.pool,
    "segments_reevaluate",
    async (client) => {
      const contactIds = triggers.map((t) => t.contactId);
      // The clock and the definitions' versions are read after the locks (their own snapshot), in the same message.
      const locked = (await lockContacts(
        client,
        contactIds,
        `SELECT clock_timestamp() AS now, ${signatureSql(sqlLiteral(businessId))} AS signature`,
      )) as { now: Date; signature: string | null };
      const now = locked.now;
      const business = await deps.cache.get(client, businessId, locked.signature ?? "");
      const targets = new Set<string>();
      for (const trigger of triggers) {
        for (const [id, inputs] of business.inputs) {
          if (targets.has(id)) continue;
          const types = trigger.eventTypes;
          if (
            trigger.all ||
            trigger.segments?.has(id) ||
            (types && (inputs.activity || [...types].some((t) => inputs.eventTypes.has(t)))) ||
            (trigger.fields && [...trigger.fields].some((f) => inputs.fields.has(f)))
          ) {
            targets.add(id);
          }
        }
      }
      if (targets.size === 0) return { evaluated: 0, entered: 0, exited: 0 };
      const results = evaluationQuery({
        businessId,
        segments: business.segments,
        targets: [...targets],
        scope: { kind: "contacts", contactIds },
        now,
      });
      const versions = new Map([...targets].map((id) => [id, business.segments.get(id)!.version]));
      return applyResults(client, {
        businessId,
        results,
        versions,
        now,
        causes: {
          byContact: new Map(triggers.map((t) => [t.contactId, t.cause])),
          fallback: { cause: "contact" },
        },
      });
    },
    { businessId, onTiming: deps.onTiming },
  );
}

/** Merges triggers of the same contact (one evaluation each), keeping the strongest cause and every event type. */
export function mergeTriggers(triggers: Iterable<ContactTrigger>): ContactTrigger[] {
  const byContact = new Map<string, ContactTrigger>();
  const rank = { merge: 3, contact: 2, event: 1, time: 0, backfill: 0, edit: 0, archive: 0 } as const;
  for (const t of triggers) {
    const seen = byContact.get(t.contactId);
    if (!seen) {
      byContact.set(t.contactId, {
        ...t,
        eventTypes: t.eventTypes ? new Set(t.eventTypes) : undefined,
        fields: t.fields ? new Set(t.fields) : undefined,
        segments: t.segments ? new Set(t.segments) : undefined,
      });
      continue;
    }
    if (
      rank[t.cause.cause] > rank[seen.cause.cause] ||
      (t.cause.cause === seen.cause.cause && t.cause.eventId)
    ) {
      seen.cause = t.cause;
    }
    seen.all = seen.all || t.all;
    if (t.eventTypes) seen.eventTypes = new Set([...(seen.eventTypes ?? []), ...t.eventTypes]);
    if (t.fields) seen.fields = new Set([...(seen.fields ?? []), ...t.fields]);
    if (t.segments) seen.segments = new Set([...(seen.segments ?? []), ...t.segments]);
  }
  return [...byContact.values()];
}

/** Splits `items` into chunks of at most `size`. */
export function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
