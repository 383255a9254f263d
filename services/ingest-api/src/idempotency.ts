import { createHash } from "node:crypto";
import { type Pool, sqlLiteral, transaction, transactionOfOne } from "@crm/db";
import { DependencyUnavailableError, HttpError } from "@crm/errors";

/** 1..255 printable ASCII characters (SPEC 4). */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

/** Validates a client's idempotency key; a bad one is a 400 naming where it came from. */
export function checkIdempotencyKey(key: unknown, where: string[]): string {
  if (typeof key === "string" && IDEMPOTENCY_KEY.test(key)) return key;
  throw new HttpError(
    400,
    "invalid_request",
    `${where.join(".")}: must be 1..255 printable ASCII characters`,
    {
      issues: [{ path: where, message: "must be 1..255 printable ASCII characters" }],
    },
  );
}

/** JSON with object keys sorted, so two bodies that differ only in key order hash the same. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

// Namespace of event ids derived from idempotency scopes (a fixed random UUID).
const EVENT_ID_NAMESPACE = Buffer.from("6f1c0b8e5d2a4f7b9e3c1a0d8b7f6e5c", "hex");

/** RFC 4122 version 5 UUID (SHA-1 of namespace + name). */
export function uuidV5(name: string, namespace: Buffer = EVENT_ID_NAMESPACE): string {
  const hash = createHash("sha1").update(namespace).update(name, "utf8").digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The event id of a keyed request: the same (business, caller, key) always gives the same id, so a retry after
 * a crash anywhere (even between Kafka's ack and the bookkeeping) re-sends the same event and the worker dedupes.
 */
export function keyedEventId(businessId: string, caller: string, key: string): string {
  return uuidV5(`${businessId}\n${caller}\n${key}`);
}

export interface IdempotencyClaim {
  key: string;
  requestHash: string;
}

export type ClaimOutcome =
  | { kind: "claimed"; eventId: string }
  | { kind: "replay"; eventId: string }
  | { kind: "mismatch" }
  | { kind: "in_flight"; retryAfterSeconds: number };

/** Where keyed requests are remembered. Scope: (business, caller, key). */
export interface IdempotencyStore {
  /** Claims each key for one send, or says why not (replay of a finished one, other body, still in flight). */
  claim(businessId: string, caller: string, claims: IdempotencyClaim[]): Promise<ClaimOutcome[]>;
  /** Marks claimed keys done once Kafka acknowledged their events. */
  complete(businessId: string, caller: string, keys: string[]): Promise<void>;
  /** Forgets claims whose send failed, so the client's retry can go ahead at once. */
  release(businessId: string, caller: string, keys: string[]): Promise<void>;
}

interface ClaimRow {
  event_id: string;
  request_hash: string;
  state: "in_flight" | "done";
  claimed: boolean;
  retry_after: number;
}

/**
 * Idempotency records in Postgres (migration 010), under RLS: every statement runs in a transaction whose tenant
 * is the business. Keys are stored hashed. An in-flight claim carries a lease; when the API dies mid-request the
 * lease expires and a retry with the same body takes the claim over (same deterministic event id).
 */
export class PgIdempotencyStore implements IdempotencyStore {
  constructor(
    private readonly pool: Pool,
    private readonly leaseMs = 30_000,
  ) {}

  /**
   * One claim (every `/v1/track` with a key) is one round trip: BEGIN, tenant, statement and COMMIT in one message.
   * A batch's claims share one transaction, a statement each.
   */
  async claim(businessId: string, caller: string, claims: IdempotencyClaim[]): Promise<ClaimOutcome[]> {
    const statements = claims.map((claim) => this.claimStatement(businessId, caller, claim));
    const [only] = statements;
    if (only !== undefined && statements.length === 1) {
      const { rows } = await unavailableOnError(
        transactionOfOne<ClaimRow>(this.pool, "idempotency.claim", only, { businessId }),
      );
      return [claimOutcome(rows[0], claims[0]!)];
    }
    return unavailableOnError(
      transaction(
        this.pool,
        "idempotency.claim",
        async (client) => {
          const outcomes: ClaimOutcome[] = [];
          for (const [i, statement] of statements.entries()) {
            const { rows } = await client.query<ClaimRow>(statement);
            outcomes.push(claimOutcome(rows[0], claims[i]!));
          }
          return outcomes;
        },
        { businessId },
      ),
    );
  }

  /**
   * Inserts the claim, or takes over an abandoned one with the same body, else reads the existing record (the
   * UNION arm runs only when the insert did nothing). Values are inlined (`sqlLiteral`) so it fits one message.
   */
  private claimStatement(businessId: string, caller: string, claim: IdempotencyClaim): string {
    const business = sqlLiteral(businessId);
    const who = sqlLiteral(caller);
    const keyHash = sqlLiteral(sha256(claim.key));
    const eventId = sqlLiteral(keyedEventId(businessId, caller, claim.key));
    return `WITH claimed AS (
       INSERT INTO idempotency_keys AS k
         (business_id, caller, key_hash, request_hash, event_id, state, lease_until)
       VALUES (${business}, ${who}, ${keyHash}, ${sqlLiteral(claim.requestHash)}, ${eventId}, 'in_flight',
               now() + make_interval(secs => ${Number(this.leaseMs)} / 1000.0))
       ON CONFLICT (business_id, caller, key_hash) DO UPDATE SET lease_until = EXCLUDED.lease_until
         WHERE k.state = 'in_flight' AND k.lease_until < now() AND k.request_hash = EXCLUDED.request_hash
       RETURNING event_id, request_hash, state, true AS claimed, 0 AS retry_after)
     SELECT * FROM claimed
     UNION ALL
     SELECT event_id, request_hash, state, false, GREATEST(1, ceil(extract(epoch FROM lease_until - now())))::int
     FROM idempotency_keys
     WHERE business_id = ${business} AND caller = ${who} AND key_hash = ${keyHash}
       AND NOT EXISTS (SELECT 1 FROM claimed)`;
  }

  complete(businessId: string, caller: string, keys: string[]): Promise<void> {
    return this.onKeys(
      "idempotency.complete",
      businessId,
      caller,
      keys,
      (where) => `UPDATE idempotency_keys SET state = 'done' WHERE ${where}`,
    );
  }

  release(businessId: string, caller: string, keys: string[]): Promise<void> {
    return this.onKeys(
      "idempotency.release",
      businessId,
      caller,
      keys,
      (where) => `DELETE FROM idempotency_keys WHERE ${where} AND state = 'in_flight'`,
    );
  }

  /** One statement over the caller's given keys, in one round trip; nothing to do for no keys. */
  private async onKeys(
    tag: string,
    businessId: string,
    caller: string,
    keys: string[],
    statement: (where: string) => string,
  ): Promise<void> {
    if (keys.length === 0) return;
    const where = `business_id = ${sqlLiteral(businessId)} AND caller = ${sqlLiteral(caller)}
      AND key_hash = ANY (${keyHashes(keys)})`;
    await unavailableOnError(transactionOfOne(this.pool, tag, statement(where), { businessId }));
  }
}

const keyHashes = (keys: string[]) =>
  `ARRAY[${keys.map((key) => sqlLiteral(sha256(key))).join(",")}]::text[]`;

function claimOutcome(row: ClaimRow | undefined, claim: IdempotencyClaim): ClaimOutcome {
  // No row: another request committed its claim while this statement ran, so it is in flight.
  if (!row) return { kind: "in_flight", retryAfterSeconds: 1 };
  if (row.claimed) return { kind: "claimed", eventId: row.event_id };
  if (row.request_hash !== claim.requestHash) return { kind: "mismatch" };
  if (row.state === "done") return { kind: "replay", eventId: row.event_id };
  return { kind: "in_flight", retryAfterSeconds: Math.min(row.retry_after, 60) };
}

/** Any database failure of the bookkeeping means "try again later" to the client (503), never a 500. */
async function unavailableOnError<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof DependencyUnavailableError) throw error;
    throw new DependencyUnavailableError("postgres", "idempotency bookkeeping failed", { cause: error });
  }
}

/** Deletes records older than the retention (at least 24 h, enforced by the database too). */
export async function pruneIdempotencyKeys(pool: Pool, retentionHours: number): Promise<number> {
  const { rows } = await pool.query<{ pruned: number }>(
    "SELECT app.prune_idempotency_keys(make_interval(hours => $1)) AS pruned",
    [Math.max(24, retentionHours)],
  );
  return rows[0]?.pruned ?? 0;
}
