import { sqlLiteral } from "@crm/db";
import { eventSuppressionEntries } from "@crm/identity";
import type { RawEventV1 } from "@crm/schemas";

/** SQLSTATE app.suppression_check raises for an event carrying a suppressed identifier (infra/sql/50_erasure.sql). */
export const SUPPRESSED_SQLSTATE = "CRM18";

/** True when a resolve transaction was refused because one of its events names an erased person (issue 18). */
export function isSuppressed(error: unknown): boolean {
  return (error as { code?: string } | null)?.code === SUPPRESSED_SQLSTATE;
}

/**
 * A resolve statement `SELECT * FROM <call>` with the suppression check (issue 18): `SELECT r.* FROM <call> AS r
 * WHERE app.suppression_check(r.contact_id, <event>, ...)`. The check takes the resolved row, so it runs after the
 * resolve took the identifiers' advisory locks, in the same transaction (see infra/sql/50_erasure.sql for why that is
 * race-free), and raises CRM18 when an identifier's keyed hash is on the suppression list, so nothing is stored.
 * `event` is the SQL of the row's event id: a literal for app.resolve_contact, `r.event_id` for resolve_contacts.
 * The hashes are computed here, with the deployment's secret, which the database never sees.
 */
export function withSuppressionCheck(
  secret: string,
  statement: string,
  event: string,
  events: RawEventV1[],
): string {
  const call = /^SELECT \* FROM (.+)$/s.exec(statement)?.[1];
  if (!call) throw new Error("withSuppressionCheck expects SELECT * FROM <call>");
  const ids: string[] = [];
  const businesses: string[] = [];
  const hashes: string[] = [];
  for (const raw of events) {
    for (const entry of eventSuppressionEntries(secret, raw.business_id, raw.contact)) {
      ids.push(raw.event_id);
      businesses.push(raw.business_id);
      hashes.push(entry.hash);
    }
  }
  const array = (items: string[], type: string) => `ARRAY[${items.map(sqlLiteral).join(",")}]::${type}[]`;
  return (
    `SELECT r.* FROM ${call} AS r WHERE app.suppression_check(r.contact_id, ${event}, ` +
    `${array(ids, "uuid")}, ${array(businesses, "uuid")}, ${array(hashes, "text")})`
  );
}
