import { sqlLiteral } from "@crm/db";
import { eventSuppressionEntries } from "@crm/identity";
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
  const businesses: string[] = [];
  const types: string[] = [];
  const values: string[] = [];
  const hashes: string[] = [];
  for (const event of events) {
    for (const entry of eventSuppressionEntries(secret, event.business_id, event.contact)) {
      businesses.push(event.business_id);
      types.push(entry.type);
      values.push(entry.value);
      hashes.push(entry.hash);
    }
  }
  const array = (items: string[], type: string) => `ARRAY[${items.map(sqlLiteral).join(",")}]::${type}[]`;
  return `SELECT app.suppression_gate(${array(businesses, "uuid")}, ${array(types, "text")}, ${array(values, "text")}, ${array(hashes, "text")})`;
}
