import type { Pool } from "@crm/db";
import type { Viewer } from "./access.ts";

export type AuditAction = "reveal" | "dlq_replay" | "dlq_discard";

export interface AuditEntry {
  id: string;
  at: Date;
  actor: string;
  action: AuditAction;
  business_id: string | null;
  contact_id: string | null;
  target: string;
  detail: Record<string, unknown>;
}

/** Records one action in console_audit (through app.console_record: the console cannot edit the trail). */
export async function recordAction(
  db: Pool,
  viewer: Viewer,
  entry: {
    action: AuditAction;
    businessId: string | undefined;
    contactId?: string;
    target: string;
    detail?: Record<string, unknown>;
  },
): Promise<void> {
  await db.query("SELECT app.console_record($1, $2, $3, $4, $5, $6)", [
    viewer.actor,
    entry.action,
    entry.businessId ?? null,
    entry.contactId ?? null,
    entry.target.slice(0, 300),
    JSON.stringify(entry.detail ?? {}),
  ]);
}

/** The trail the viewer may see (the operator: all of it; a user: their businesses'), newest first. */
export async function listActions(
  db: Pool,
  viewer: Viewer,
  options: { targets?: string[]; limit?: number } = {},
): Promise<AuditEntry[]> {
  const { rows } = await db.query<AuditEntry>(
    "SELECT id::text, at, actor, action, business_id, contact_id, target, detail FROM app.console_audit_list($1, $2, $3)",
    [viewer.businesses, options.targets ?? null, options.limit ?? 200],
  );
  return rows;
}
