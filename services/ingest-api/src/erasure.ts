import { isTransientDbError, type Pool, type PoolClient, transaction } from "@crm/db";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import {
  type IdentifierType,
  normalizeAnonymousId,
  normalizeEmail,
  normalizeExternalId,
  normalizePhone,
  suppressionHash,
} from "@crm/identity";
import { sleep } from "@crm/process";

// Erasure and suppression (issue 18), shared by the management API (routes/manage-erasure.ts) and the operator
// CLI (erasure-cli.ts). The SQL is infra/sql/50_erasure.sql.

/** What an erasure or a lift names: one identifier of the business (normalized here), or a contact id. */
export type ErasureTarget = { type: IdentifierType; value: string } | { type: "contact_id"; value: string };
export type TargetType = ErasureTarget["type"];
export const TARGET_TYPES = ["external_id", "email", "phone", "anonymous_id", "contact_id"] as const;

/** app.erasure_lock's answer to a junk value (SPEC 7.1): never an identity, never suppressed. */
const JUNK_SQLSTATE = "CRM19";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The target as the resolver stores it (@crm/identity, as ingest normalizes), or 400 naming the field. */
export function normalizeTarget(type: TargetType, raw: string, country: string): ErasureTarget {
  const invalid = (reason: string) =>
    new HttpError(400, "invalid_request", `${type}: ${reason}`, {
      issues: [{ path: [type], message: reason }],
    });
  if (type === "contact_id") {
    if (!UUID.test(raw)) throw invalid("must be a uuid");
    return { type, value: raw.toLowerCase() };
  }
  const normalizers = {
    external_id: normalizeExternalId,
    email: normalizeEmail,
    phone: (value: string) => normalizePhone(value, country),
    anonymous_id: normalizeAnonymousId,
  };
  const result = normalizers[type](raw);
  if (!result.ok) throw invalid(result.reason);
  return { type, value: result.value };
}

export interface ErasureResult {
  /** The audit row's id; also the `cause_event_id` of the `erased` change on contact.updated.v1. */
  erasureId: string;
  /** The erased contacts, the surviving one first (empty when the identifier was not known: it is suppressed). */
  contactIds: string[];
  /** Rows removed per kind, and suppression entries added. */
  counts: Record<string, number>;
}

/**
 * Erases one person of `businessId` in ONE transaction (tenant set): app.erasure_lock takes the resolver's locks
 * of all the person's identifiers and returns the merge tree; the identifiers are hashed here with the secret
 * (never sent to the database); app.erase_contacts deletes everything and writes the suppressions, the `erased`
 * outbox row and the audit row. 404 for an unknown contact id. A lost race (deadlock with the resolver, which
 * locks in another order across rounds) is retried.
 */
export async function erasePerson(
  pool: Pool,
  options: { businessId: string; target: ErasureTarget; actor: string; secret: string },
): Promise<ErasureResult> {
  const { businessId, target, actor, secret } = options;
  return withRetries("erasure.erase", () =>
    transaction(
      pool,
      "erasure.erase",
      async (client) => {
        const locked = await client
          .query<{ contacts: string[]; identities: [IdentifierType, string][] }>(
            "SELECT contacts, identities FROM app.erasure_lock($1, $2, $3)",
            [businessId, target.type, target.value],
          )
          .catch((error) => {
            if ((error as { code?: string }).code !== JUNK_SQLSTATE) throw error;
            const reason = "is one of the business's junk values, which identify no one";
            throw new HttpError(400, "invalid_request", `${target.type}: ${reason}`, {
              issues: [{ path: [target.type], message: reason }],
            });
          });
        const tree = locked.rows[0];
        if (!tree && target.type === "contact_id") {
          throw new HttpError(404, "not_found", "no such contact in this business");
        }
        const identities = tree?.identities ?? [];
        const named: [IdentifierType, string][] =
          target.type === "contact_id" ? [] : [[target.type, target.value]];
        const hashes = [
          ...new Set(
            [...identities, ...named].map(([type, value]) =>
              suppressionHash(secret, businessId, type, value),
            ),
          ),
        ];
        const erased = await client.query<{ erasure_id: string; counts: Record<string, number> }>(
          "SELECT erasure_id, counts FROM app.erase_contacts($1, $2::uuid[], $3::jsonb, $4::text[], $5, $6)",
          [businessId, tree?.contacts ?? [], JSON.stringify(identities), hashes, actor, target.type],
        );
        const row = erased.rows[0]!;
        return { erasureId: row.erasure_id, contactIds: tree?.contacts ?? [], counts: row.counts };
      },
      { businessId },
    ),
  );
}

/** Lifts the suppression of one identifier (the person came back and consented); the count removed (0 or 1). */
export async function liftSuppression(
  pool: Pool,
  options: {
    businessId: string;
    target: { type: IdentifierType; value: string };
    actor: string;
    secret: string;
  },
): Promise<number> {
  const { businessId, target, actor, secret } = options;
  const hash = suppressionHash(secret, businessId, target.type, target.value);
  return withRetries("erasure.lift", () =>
    transaction(
      pool,
      "erasure.lift",
      async (client) => {
        const { rows } = await client.query<{ lifted: number }>(
          "SELECT app.lift_suppression($1, $2::text[], $3, $4) AS lifted",
          [businessId, [hash], actor, target.type],
        );
        return rows[0]!.lifted;
      },
      { businessId },
    ),
  );
}

export interface AuditEntry {
  id: string;
  action: "erase" | "lift_suppression";
  actor: string;
  requested_by: TargetType;
  counts: Record<string, number>;
  created_at: string;
}

/** The business's erasures and suppression changes, newest first (no identifier in any of them). */
export async function listAudit(pool: Pool, businessId: string, limit = 100): Promise<AuditEntry[]> {
  return withRetries("erasure.audit", () =>
    transaction(
      pool,
      "erasure.audit",
      async (client) => {
        const { rows } = await client.query<AuditEntry>(
          `SELECT id, action, actor, requested_by, counts, created_at FROM erasure_audit
           WHERE business_id = $1 ORDER BY created_at DESC, id LIMIT $2`,
          [businessId, Math.min(Math.max(limit, 1), 1_000)],
        );
        return rows.map((row) => ({ ...row, created_at: new Date(row.created_at).toISOString() }));
      },
      { businessId },
    ),
  );
}

/** Whether `userId` owns `businessId` (only an owner may erase or lift, issue 18). */
export async function isOwner(pool: Pool, businessId: string, userId: string): Promise<boolean> {
  return withRetries("erasure.owner", () =>
    transaction(
      pool,
      "erasure.owner",
      async (client: PoolClient) => {
        const { rows } = await client.query<{ owner_id: string }>(
          "SELECT owner_id FROM businesses WHERE id = $1",
          [businessId],
        );
        return rows[0]?.owner_id === userId;
      },
      { businessId },
    ),
  );
}

/** Runs `fn` again after a lost race (deadlock, serialization, lock timeout); 503 when Postgres stays away. */
async function withRetries<T>(tag: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (error instanceof HttpError || !isTransientDbError(error)) throw error;
      if (attempt >= 4) {
        throw new DependencyUnavailableError("postgres", `${tag} could not complete`, { cause: error });
      }
      await sleep(50 * attempt);
    }
  }
}
