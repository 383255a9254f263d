import { hash } from "node:crypto";
import { isConnectionFailure, type Pool } from "@crm/db";
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

// One-shot hashes (crypto.hash): a Hash object per call was about half the cost of a keyed item's three hashes.
export const sha256 = (text: string) => hash("sha256", text);

// Namespace of event ids derived from idempotency scopes (a fixed random UUID).
const EVENT_ID_NAMESPACE = Buffer.from("6f1c0b8e5d2a4f7b9e3c1a0d8b7f6e5c", "hex");

/** RFC 4122 version 5 UUID (SHA-1 of namespace + name). */
export function uuidV5(name: string, namespace: Buffer = EVENT_ID_NAMESPACE): string {
  const bytes = hash("sha1", Buffer.concat([namespace, Buffer.from(name, "utf8")]), "buffer").subarray(0, 16);
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
  /**
   * Marks claimed keys done once Kafka acknowledged their events, by the event ids their claims gave. A caller need
   * not wait for it: a claim of the same key made after this call (in this process) sees it done.
   */
  complete(businessId: string, caller: string, eventIds: string[]): Promise<void>;
  /** Forgets claims whose send failed, so the client's retry can go ahead at once. */
  release(businessId: string, caller: string, eventIds: string[]): Promise<void>;
  /** Resolves once every call made so far reached the database (or failed): before a shutdown closes the pool. */
  drain(): Promise<void>;
}

/** A record `app.apply_idempotency` holds (`claimed`) or found for a claimed key; none: claimed meanwhile. */
interface RecordRow {
  event_id: string;
  record_hash: string;
  record_state: "in_flight" | "done";
  claimed: boolean;
  retry_after: number;
}

/** What one call of claim, complete or release asks for one key (key and hashes: claims only). */
interface Operation {
  kind: "claim" | "complete" | "release";
  businessId: string;
  eventId: string;
  caller: string;
  keyHash: string;
  requestHash: string;
}

/** A call waiting for its flush; `settle` gets the claim outcome of each of its operations (undefined for others). */
interface Pending {
  operations: Operation[];
  settle: (outcomes: (ClaimOutcome | undefined)[]) => void;
  fail: (error: unknown) => void;
}

/** One business's and caller's share of a flush, as `app.apply_idempotency` takes it. */
interface FlushGroup {
  business_id: string;
  caller: string;
  done: string[];
  released: string[];
  /** [event id, key hash, request hash] */
  claims: [string, string, string][];
}

/**
 * Idempotency records in Postgres (`idempotency_keys`, keyed by the deterministic event id), under RLS. Keys are
 * stored hashed. An in-flight claim carries a lease; when the API dies mid-request the lease expires and a retry
 * with the same body takes the claim over (same deterministic event id).
 *
 * Calls are coalesced: what concurrent requests ask while flushes are under way goes to the database together in the
 * next one, as ONE statement (`app.apply_idempotency`, infra/sql/30_ingest_api.sql) in one round trip and one
 * commit. A lone request is flushed at once; under load a flush carries the claims and completions of every request
 * in between, and a batch's keys always travel together, so a keyed batch costs the same few statements whatever
 * its size. Two flushes run at once (one waits for its answer while the other executes), never two with the same
 * key: a call whose key is in a flush under way waits for the next, so this process's flushes never wait on each
 * other's row locks.
 *
 * A request waits for its claim only: the API answers once Kafka acknowledged and its completion rides on the next
 * flush, with the claims of later requests (issue 13: one round trip and one commit per keyed request, however many
 * keys). Order holds within the process: a later claim of a completed key travels in the completion's flush (whose
 * statement marks before it claims) or in a flush after it. A flush that claims nothing commits without waiting
 * for its WAL flush (synchronous_commit off, set by the statement): losing it in a Postgres crash only loses
 * completions and releases, which leave durable claims in flight, and a client's retry takes such a claim over
 * when its lease ends and re-sends the same event id, which the worker dedupes.
 */
export class PgIdempotencyStore implements IdempotencyStore {
  private queue: Pending[] = [];
  private flushes = 0;
  /** drain() calls waiting for a flush to end. */
  private idle: (() => void)[] = [];
  /** Event ids of the flushes under way. */
  private readonly busy = new Set<string>();

  constructor(
    private readonly pool: Pool,
    private readonly leaseMs = 30_000,
    private readonly options: {
      /**
       * Flushes under way at once (default 2: one executes while the other waits for its answer; more flushes are
       * smaller ones, and each costs Postgres a transaction and the API a round trip).
       */
      maxFlushes?: number;
      /** Operations per flush, beyond which calls wait for the next one (a call is never split; default 2,000). */
      maxOperations?: number;
    } = {},
  ) {}

  async claim(businessId: string, caller: string, claims: IdempotencyClaim[]): Promise<ClaimOutcome[]> {
    const outcomes = await this.enqueue(
      claims.map((claim) => ({
        kind: "claim",
        businessId,
        caller,
        eventId: keyedEventId(businessId, caller, claim.key),
        keyHash: sha256(claim.key),
        requestHash: claim.requestHash,
      })),
    );
    return outcomes.map((outcome) => outcome!);
  }

  async complete(businessId: string, caller: string, eventIds: string[]): Promise<void> {
    await this.enqueue(eventIds.map((eventId) => marking("complete", businessId, caller, eventId)));
  }

  async release(businessId: string, caller: string, eventIds: string[]): Promise<void> {
    await this.enqueue(eventIds.map((eventId) => marking("release", businessId, caller, eventId)));
  }

  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.flushes > 0) {
      await new Promise<void>((resolve) => this.idle.push(resolve));
    }
  }

  private enqueue(operations: Operation[]): Promise<(ClaimOutcome | undefined)[]> {
    if (operations.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.queue.push({ operations, settle: resolve, fail: reject });
      this.flush();
    });
  }

  private flush(): void {
    while (this.flushes < (this.options.maxFlushes ?? 2)) {
      const batch = this.nextBatch();
      if (batch.length === 0) return;
      const keys = batch.flatMap((pending) => pending.operations.map((op) => op.eventId));
      for (const key of keys) this.busy.add(key);
      this.flushes += 1;
      void this.apply(batch).finally(() => {
        for (const key of keys) this.busy.delete(key);
        this.flushes -= 1;
        this.flush();
        for (const resolve of this.idle.splice(0)) resolve();
      });
    }
  }

  /** The calls of the next flush, in queue order: those whose keys are not in a flush under way, up to the cap. */
  private nextBatch(): Pending[] {
    const max = this.options.maxOperations ?? 2_000;
    const batch: Pending[] = [];
    const waiting: Pending[] = [];
    let operations = 0;
    for (const pending of this.queue) {
      const fits = batch.length === 0 || operations + pending.operations.length <= max;
      if (fits && !pending.operations.some((op) => this.busy.has(op.eventId))) {
        batch.push(pending);
        operations += pending.operations.length;
      } else {
        waiting.push(pending);
      }
    }
    this.queue = waiting;
    return batch;
  }

  private async apply(batch: Pending[]): Promise<void> {
    const operations = batch.flatMap((pending) => pending.operations);
    let records: Map<string, RecordRow>;
    try {
      records = await this.statement(operations);
    } catch (error) {
      // A statement the server refused (a deadlock with another instance, a value it cannot store) must not fail
      // the other requests of the flush: each call is tried again alone. An outage fails them all.
      if (batch.length > 1 && !isConnectionFailure(error)) {
        for (const pending of batch) await this.apply([pending]);
        return;
      }
      const unavailable = new DependencyUnavailableError("postgres", "idempotency bookkeeping failed", {
        cause: error,
      });
      for (const pending of batch) pending.fail(unavailable);
      return;
    }
    // The first claim of a key in the flush holds it; a later one (a concurrent duplicate) finds it in flight.
    const held = new Set<string>();
    for (const pending of batch) {
      pending.settle(
        pending.operations.map((op) => {
          if (op.kind !== "claim") return undefined;
          const record = records.get(op.eventId);
          const first = !held.has(op.eventId);
          held.add(op.eventId);
          return claimOutcome(record && { ...record, claimed: record.claimed && first }, op);
        }),
      );
    }
  }

  /**
   * ONE statement, its own transaction (no BEGIN/COMMIT around a single statement), prepared once per connection:
   * the operations travel as one JSON parameter, grouped by business and caller.
   */
  private async statement(operations: Operation[]): Promise<Map<string, RecordRow>> {
    const groups = new Map<string, FlushGroup>();
    const claimed = new Set<string>();
    for (const op of operations) {
      const id = `${op.businessId} ${op.caller}`;
      let group = groups.get(id);
      if (!group) {
        group = { business_id: op.businessId, caller: op.caller, done: [], released: [], claims: [] };
        groups.set(id, group);
      }
      if (op.kind === "complete") group.done.push(op.eventId);
      else if (op.kind === "release") group.released.push(op.eventId);
      else if (!claimed.has(op.eventId)) {
        claimed.add(op.eventId);
        group.claims.push([op.eventId, op.keyHash, op.requestHash]);
      }
    }
    // Groups in one order, so flushes of several instances take their row locks in the same order.
    const sorted = [...groups].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, group]) => group);
    const { rows } = await this.pool.query<RecordRow>({
      name: "idempotency.apply",
      text: "/* idempotency.apply */ SELECT * FROM app.apply_idempotency($1::jsonb, make_interval(secs => $2::float8 / 1000))",
      values: [JSON.stringify(sorted), this.leaseMs],
    });
    return new Map(rows.map((row) => [row.event_id, row]));
  }
}

function marking(
  kind: "complete" | "release",
  businessId: string,
  caller: string,
  eventId: string,
): Operation {
  return { kind, businessId, caller, eventId, keyHash: "", requestHash: "" };
}

function claimOutcome(record: RecordRow | undefined, claim: Operation): ClaimOutcome {
  // No record: another request committed its claim while this statement ran, so it is in flight.
  if (!record) return { kind: "in_flight", retryAfterSeconds: 1 };
  if (record.claimed) return { kind: "claimed", eventId: claim.eventId };
  if (record.record_hash !== claim.requestHash) return { kind: "mismatch" };
  if (record.record_state === "done") return { kind: "replay", eventId: claim.eventId };
  return { kind: "in_flight", retryAfterSeconds: Math.min(Math.max(record.retry_after, 1), 60) };
}

/** Deletes records older than the retention (at least 24 h, enforced by the database too). */
export async function pruneIdempotencyKeys(pool: Pool, retentionHours: number): Promise<number> {
  const { rows } = await pool.query<{ pruned: number }>(
    "SELECT app.prune_idempotency_keys(make_interval(hours => $1)) AS pruned",
    [Math.max(24, retentionHours)],
  );
  return rows[0]?.pruned ?? 0;
}
