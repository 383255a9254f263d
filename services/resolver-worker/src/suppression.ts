import { sqlLiteral } from "@crm/db";
import { eventSuppressionHashes } from "@crm/identity";
import type { RawEventV1 } from "@crm/schemas";

/** SQLSTATE app.suppression_gate raises for an event carrying a suppressed identifier (infra/sql/50_erasure.sql). */
export const SUPPRESSED_SQLSTATE = "CRM18";

/** True when a resolve transaction was refused because one of its events names an erased person (issue 18). */
export function isSuppressed(error: unknown): boolean {
  return (error as { code?: string } | null)?.code === SUPPRESSED_SQLSTATE;
}

/**
 * The statement that runs before app.resolve_contact(s) in the same transaction (and the same message):
 * app.suppression_gate takes the resolver's locks of the events' identifiers and raises CRM18 when one of their
 * keyed hashes is on the suppression list, so the transaction stores nothing. The hashes are computed here, with
 * the deployment's secret, which the database never sees.
 */
export function suppressionGate(secret: string, events: RawEventV1[]): string {
  const payload = events.map((event) => ({
    business_id: event.business_id,
    external_id: event.contact.external_id,
    email: event.contact.email,
    phone: event.contact.phone,
    anonymous_id: event.contact.anonymous_id,
    previous_id: event.contact.previous_id,
    hashes: eventSuppressionHashes(secret, event.business_id, event.contact),
  }));
  return `SELECT app.suppression_gate(${sqlLiteral(JSON.stringify(payload))}::jsonb)`;
}
