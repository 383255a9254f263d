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

/**
 * JSON with object keys sorted (UTF-16 code unit order), so two bodies that differ only in key order hash the same.
 * Stored records hold its hash: the output must never change (idempotency.test.ts checks it against the first
 * form). One string built in place: the entries/filter/sort/map/join form cost about 7 JSON.stringify's per item.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++)
      out += i === 0 ? canonicalJson(value[i]) : `,${canonicalJson(value[i])}`;
    return `${out}]`;
  }
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object);
  if (keys.length > 1) keys.sort();
  let out = "{";
  for (const key of keys) {
    const item = object[key];
    if (item === undefined) continue;
    out += `${out.length === 1 ? "" : ","}${JSON.stringify(key)}:${canonicalJson(item)}`;
  }
  return `${out}}`;
}

// One-shot hashes (crypto.hash): a Hash object per call was about half the cost of a keyed item's three hashes.
export const sha256 = (text: string) => hash("sha256", text);

// Namespace of event ids derived from idempotency scopes (a fixed random UUID).
const EVENT_ID_NAMESPACE = Buffer.from("6f1c0b8e5d2a4f7b9e3c1a0d8b7f6e5c", "hex");
/** Namespace then name, written in place: a keyed item's event id allocated no buffers. */
const scratch = Buffer.alloc(16 + 2_048);

/** RFC 4122 version 5 UUID (SHA-1 of namespace + name). */
export function uuidV5(name: string, namespace: Buffer = EVENT_ID_NAMESPACE): string {
  let input: Buffer;
  // At most 3 UTF-8 bytes per UTF-16 unit.
  if (namespace.length === 16 && name.length * 3 <= scratch.length - 16) {
    namespace.copy(scratch, 0);
    input = scratch.subarray(0, 16 + scratch.write(name, 16, "utf8"));
  } else {
    input = Buffer.concat([namespace, Buffer.from(name, "utf8")]);
  }
  const hex = hash("sha1", input, "hex");
  // Version 5 in the high nibble of byte 6, variant 10 in the two high bits of byte 8.
  const variant = ((Number.parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
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
  /**
   * Claims each key for one send, or says why not (replay of a finished one, other body, still in flight): an
   * outcome per key, once the claims taken are visible to every other request and survive a Postgres crash.
   */
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

/**
 * A record `app.apply_idempotency` holds (`claimed`: its id only) or found for a claimed key; none: claimed
 * meanwhile.
 */
type RecordRow =
  | { event_id: string; claimed: true; record_hash: null; record_state: null; retry_after: null }
  | {
      event_id: string;
      claimed: false;
      record_hash: string;
      record_state: "in_flight" | "done";
      retry_after: number;
    };

/** What one call of claim, complete or release asks for one key (key and hashes: claims only). */
interface Operation {
  kind: "claim" | "complete" | "release";
  businessId: string;
  eventId: string;
  caller: string;
  keyHash: string;
  requestHash: string;
}

/**
 * A call waiting for its flush; `settle` gets the claim outcome of each of its operations (undefined for others).
 * `urgent`: it claims or releases (a flush goes at once); a completion alone may wait for company.
 */
interface Pending {
  operations: Operation[];
  urgent: boolean;
  queuedAt: number;
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
 * next one, as ONE statement (`app.apply_idempotency`, infra/sql/30_ingest_api.sql) in its own implicit
 * transaction: one message, one round trip, one commit, answered once the commit is durable. A request with claims
 * is flushed at once; under load a flush carries the claims of every request in between, and a batch's keys always
 * travel together, so a keyed batch costs one statement whatever its size. Completions are not urgent (the answer
 * does not wait for them): they ride on the next flush with claims, or go alone after `completionLingerMs`, so at a
 * steady rate a keyed request costs the database and the API one statement, not two. Two flushes run at once (one
 * waits for its answer while the other executes), never two with the same key: a call whose key is in a flush
 * under way waits for the next, so this process's flushes never wait on each other's row locks.
 *
 * Order holds within the process: a later claim of a completed key travels in the completion's flush (whose
 * statement marks before it claims) or in a flush after it. Another instance sees the key in flight (409 with
 * Retry-After) until the completion's flush, at most the linger later. A flush that claims nothing commits without
 * waiting for the WAL (synchronous_commit off, set by the statement): losing its completions and releases in a
 * Postgres crash leaves durable claims in flight, which a client's retry takes over when their lease ends,
 * re-sending the same event id, which the worker dedupes.
 */
export class PgIdempotencyStore implements IdempotencyStore {
  private queue: Pending[] = [];
  private flushes = 0;
  /** drain() calls waiting for a flush to end; while any waits, completions do not linger. */
  private idle: (() => void)[] = [];
  /** Event ids of the flushes under way. */
  private readonly busy = new Set<string>();
  private lingering: NodeJS.Timeout | undefined;

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
      /** How long completions wait for a flush with claims before going alone (default 20 ms). */
      completionLingerMs?: number;
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
      const flushed = new Promise<void>((resolve) => this.idle.push(resolve));
      this.flush();
      await flushed;
    }
  }

  private enqueue(operations: Operation[]): Promise<(ClaimOutcome | undefined)[]> {
    if (operations.length === 0) return Promise.resolve([]);
    const urgent = operations.some((op) => op.kind !== "complete");
    return new Promise((resolve, reject) => {
      this.queue.push({ operations, urgent, queuedAt: Date.now(), settle: resolve, fail: reject });
      this.flush();
    });
  }

  /** Starts flushes while there is room; an operation's key stays busy until its flush's commit ended. */
  private flush(): void {
    const max = this.options.maxFlushes ?? 2;
    while (this.flushes < max) {
      const batch = this.nextBatch();
      if (batch.length === 0) return;
      const keys = batch.flatMap((pending) => pending.operations.map((op) => op.eventId));
      for (const key of keys) this.busy.add(key);
      this.flushes += 1;
      void this.apply(batch).then(() => {
        this.flushes -= 1;
        for (const key of keys) this.busy.delete(key);
        this.flush();
        for (const resolve of this.idle.splice(0)) resolve();
      });
    }
  }

  /**
   * The calls of the next flush, in queue order: those whose keys are not in a flush under way, up to the cap.
   * None while only completions wait, younger than the linger (a timer comes back for them) and nobody drains.
   */
  private nextBatch(): Pending[] {
    const ready = this.queue.filter((pending) => !pending.operations.some((op) => this.busy.has(op.eventId)));
    if (ready.length === 0) return [];
    if (!ready.some((pending) => pending.urgent) && this.idle.length === 0) {
      const due = ready[0]!.queuedAt + (this.options.completionLingerMs ?? 20) - Date.now();
      if (due > 0) {
        this.lingering ??= setTimeout(() => {
          this.lingering = undefined;
          this.flush();
        }, due).unref();
        return [];
      }
    }
    const max = this.options.maxOperations ?? 2_000;
    const batch: Pending[] = [];
    let operations = 0;
    for (const pending of ready) {
      if (batch.length > 0 && operations + pending.operations.length > max) break;
      batch.push(pending);
      operations += pending.operations.length;
    }
    const taken = new Set(batch);
    this.queue = this.queue.filter((pending) => !taken.has(pending));
    return batch;
  }

  /** Runs a flush and settles its calls; never rejects. */
  private async apply(batch: Pending[]): Promise<void> {
    let records: Map<string, RecordRow>;
    try {
      records = await this.statement(batch);
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
    // The first claim of a key in the flush holds it; a later one (a concurrent duplicate) finds it in flight, or
    // its body other than the first's.
    const held = new Map<string, string>();
    const leaseSeconds = Math.min(Math.max(Math.ceil(this.leaseMs / 1000), 1), 60);
    for (const pending of batch) {
      const outcomes = pending.operations.map((op): ClaimOutcome | undefined => {
        if (op.kind !== "claim") return undefined;
        const record = records.get(op.eventId);
        if (record?.claimed !== true) return claimOutcome(record, op);
        const holder = held.get(op.eventId);
        if (holder === undefined) {
          held.set(op.eventId, op.requestHash);
          return { kind: "claimed", eventId: op.eventId };
        }
        return holder === op.requestHash
          ? { kind: "in_flight", retryAfterSeconds: leaseSeconds }
          : { kind: "mismatch" };
      });
      pending.settle(outcomes);
    }
  }

  /**
   * ONE statement, prepared once per connection, in its own transaction: the operations travel as one JSON
   * parameter, grouped by business and caller. Its answer comes once the transaction committed (durably when it
   * claims; without claims the statement turns the wait for the WAL off, see the class).
   */
  private async statement(batch: Pending[]): Promise<Map<string, RecordRow>> {
    const groups = new Map<string, FlushGroup>();
    const claimed = new Set<string>();
    // A call's operations share its business and caller.
    for (const { operations } of batch) {
      const { businessId, caller } = operations[0]!;
      const id = `${businessId} ${caller}`;
      let group = groups.get(id);
      if (!group) {
        group = { business_id: businessId, caller, done: [], released: [], claims: [] };
        groups.set(id, group);
      }
      for (const op of operations) {
        if (op.kind === "complete") group.done.push(op.eventId);
        else if (op.kind === "release") group.released.push(op.eventId);
        else if (!claimed.has(op.eventId)) {
          claimed.add(op.eventId);
          group.claims.push([op.eventId, op.keyHash, op.requestHash]);
        }
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

/** The outcome of a claim that found `record` (not claimed by this flush). */
function claimOutcome(
  record: Extract<RecordRow, { claimed: false }> | undefined,
  claim: Operation,
): ClaimOutcome {
  // No record: another request committed its claim while this statement ran, so it is in flight.
  if (!record) return { kind: "in_flight", retryAfterSeconds: 1 };
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
