import type { TenantDirectory } from "@crm/auth";
import type { Principal } from "./session.ts";

/**
 * Who is looking, resolved on every request: the operator sees every business (`businesses: null`); a user sees
 * the businesses they own or belong to now (the directory's answer, cached at most 30 s as at ingest), so removing
 * them from a team ends their view within that window.
 */
export interface Viewer {
  principal: Principal;
  /** null: every business (the operator) */
  businesses: string[] | null;
  /** how the audit trail names this viewer: "operator", "operator:<uuid>" (by JWT claim) or "user:<uuid>" */
  actor: string;
}

export async function viewerOf(principal: Principal, directory: TenantDirectory): Promise<Viewer> {
  if (principal.kind === "operator") {
    return {
      principal,
      businesses: null,
      actor: principal.userId ? `operator:${principal.userId}` : "operator",
    };
  }
  const access = await directory.businessesOfUser(principal.userId);
  return {
    principal,
    businesses: access.map((a) => a.businessId),
    actor: `user:${principal.userId}`,
  };
}

/** True when the viewer may see data of `businessId` (undefined: a message whose business is unknown). */
export function maySee(viewer: Viewer, businessId: string | undefined): boolean {
  if (viewer.businesses === null) return true;
  return businessId !== undefined && viewer.businesses.includes(businessId);
}
