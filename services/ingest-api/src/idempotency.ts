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

/**
 * What a claim call gives: an outcome per key, as soon as the claims are taken (visible to every other request), and
 * `durable`, which resolves once the claims taken survive a Postgres crash (rejects if that is not known). The
 * event may be sent meanwhile; the answer waits for both.
 */
export interface Claims {
  outcomes: ClaimOutcome[];
  durable: Promise<void>;
}

export type ClaimOutcome =
  | { kind: "claimed"; eventId: string }
  | { kind: "replay"; eventId: string }
  | { kind: "mismatch" }
  | { kind: "in_flight"; retryAfterSeconds: number };

/** Where keyed requests are remembered. Scope: (business, caller, key). */
export interface IdempotencyStore {
  /** Claims each key for one send, or says why not (replay of a finished one, other body, still in flight). */
  claim(businessId: string, caller: string, claims: IdempotencyClaim[]): Promise<Claims>;
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
 * A call waiting for its flush; `settle` gets the claim outcome of each of its operations (undefined for others)
 * and when what the flush wrote is durable.
 */
interface Pending {
  operations: Operation[];
  settle: (settled: { outcomes: (ClaimOutcome | undefined)[]; durable: Promise<void> }) => void;
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
 * A request waits for its claims' statement, then sends its event while their transaction commits, and answers once
 * both are done; its completion rides on the next flush, with the claims of later requests (issue 13: the answer
 * waits for one statement and the longer of Kafka's acknowledgement and one commit, however many keys). Order holds
 * within the process: a later claim of a completed key travels in the completion's flush (whose statement marks
 * before it claims) or in a flush after it. A flush that claims nothing commits without waiting for the WAL
 * (synchronous_commit off, set by the statement): losing its completions and releases in a Postgres crash leaves
 * durable claims in flight, which a client's retry takes over when their lease ends, re-sending the same event id,
 * which the worker dedupes.
 */
export class PgIdempotencyStore implements IdempotencyStore {
  private queue: Pending[] = [];
  private flushes = 0;
  /** drain() calls waiting for a flush to end. */
  private idle: (() => void)[] = [];
  /** Claiming flushes whose statement answered and whose COMMIT is under way. */
  private committing = 0;
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

  async claim(businessId: string, caller: string, claims: IdempotencyClaim[]): Promise<Claims> {
    const { outcomes, durable } = await this.enqueue(
      claims.map((claim) => ({
        kind: "claim",
        businessId,
        caller,
        eventId: keyedEventId(businessId, caller, claim.key),
        keyHash: sha256(claim.key),
        requestHash: claim.requestHash,
      })),
    );
    return { outcomes: outcomes.map((outcome) => outcome!), durable };
  }

  async complete(businessId: string, caller: string, eventIds: string[]): Promise<void> {
    await this.enqueue(eventIds.map((eventId) => marking("complete", businessId, caller, eventId)));
  }

  async release(businessId: string, caller: string, eventIds: string[]): Promise<void> {
    await this.enqueue(eventIds.map((eventId) => marking("release", businessId, caller, eventId)));
  }

  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.flushes > 0 || this.committing > 0) {
      await new Promise<void>((resolve) => this.idle.push(resolve));
    }
  }

  private enqueue(
    operations: Operation[],
  ): Promise<{ outcomes: (ClaimOutcome | undefined)[]; durable: Promise<void> }> {
    if (operations.length === 0) return Promise.resolve({ outcomes: [], durable: Promise.resolve() });
    return new Promise((resolve, reject) => {
      this.queue.push({ operations, settle: resolve, fail: reject });
      this.flush();
    });
  }

  /**
   * Starts flushes while there is room: a flush whose statement answered makes room for the next while its COMMIT
   * runs (at most as many commits under way as flushes, so the store holds at most twice maxFlushes connections),
   * but its keys stay busy until the commit ends, so a later operation on one of them sees what it committed.
   */
  private flush(): void {
    const max = this.options.maxFlushes ?? 2;
    while (this.flushes < max && this.committing < max) {
      const batch = this.nextBatch();
      if (batch.length === 0) return;
      const keys = batch.flatMap((pending) => pending.operations.map((op) => op.eventId));
      for (const key of keys) this.busy.add(key);
      this.flushes += 1;
      const settled = () => {
        for (const key of keys) this.busy.delete(key);
        this.flush();
        for (const resolve of this.idle.splice(0)) resolve();
      };
      void this.apply(batch).then(({ commit }) => {
        this.flushes -= 1;
        if (!commit) return settled();
        this.committing += 1;
        this.flush();
        const committed = () => {
          this.committing -= 1;
          settled();
        };
        commit.then(committed, committed);
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

  /**
   * Runs a flush and settles its calls; never rejects. Gives its COMMIT under way, if it has one (wrapped: a
   * promise resolved with a promise would wait for it).
   */
  private async apply(batch: Pending[]): Promise<{ commit: Promise<unknown> | undefined }> {
    let records: Map<string, RecordRow>;
    let durable: Promise<void>;
    try {
      ({ records, durable } = await this.statement(batch));
    } catch (error) {
      // A statement the server refused (a deadlock with another instance, a value it cannot store) must not fail
      // the other requests of the flush: each call is tried again alone. An outage fails them all.
      if (batch.length > 1 && !isConnectionFailure(error)) {
        const commits: Promise<unknown>[] = [];
        for (const pending of batch) {
          const { commit } = await this.apply([pending]);
          if (commit) commits.push(commit);
        }
        return { commit: commits.length > 0 ? Promise.allSettled(commits) : undefined };
      }
      const unavailable = new DependencyUnavailableError("postgres", "idempotency bookkeeping failed", {
        cause: error,
      });
      for (const pending of batch) pending.fail(unavailable);
      return { commit: undefined };
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
      pending.settle({ outcomes, durable });
    }
    return { commit: durable === DURABLE ? undefined : durable };
  }

  /**
   * ONE statement, prepared once per connection: the operations travel as one JSON parameter, grouped by business
   * and caller. Without claims it is its own transaction, committed without waiting for the WAL (see the class).
   * With claims it runs in a transaction whose COMMIT is sent at once but not awaited: the records come back when the
   * statement ends, and `durable` resolves when the commit did (rejects when it is not known to have). The claims
   * are visible to others only from the commit on; another instance's claim of one of their keys waits for it.
   */
  private async statement(
    batch: Pending[],
  ): Promise<{ records: Map<string, RecordRow>; durable: Promise<void> }> {
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
    const query = {
      name: "idempotency.apply",
      text: "/* idempotency.apply */ SELECT * FROM app.apply_idempotency($1::jsonb, make_interval(secs => $2::float8 / 1000))",
      values: [JSON.stringify(sorted), this.leaseMs],
    };
    const rows = (result: { rows: RecordRow[] }) => new Map(result.rows.map((row) => [row.event_id, row]));
    if (claimed.size === 0)
      return { records: rows(await this.pool.query<RecordRow>(query)), durable: DURABLE };

    const client = await this.pool.connect();
    let result: { rows: RecordRow[] };
    try {
      // Sent back to back on the connection (pg queues them); only the statement's answer is awaited.
      [, result] = await Promise.all([client.query("BEGIN"), client.query<RecordRow>(query)]);
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      client.release(isConnectionFailure(error) ? (error as Error) : undefined);
      throw error;
    }
    const commit = client.query("COMMIT").then(
      () => client.release(),
      (error: unknown) => {
        client.release(error as Error);
        throw new DependencyUnavailableError("postgres", "idempotency claims not committed", {
          cause: error,
        });
      },
    );
    return { records: rows(result), durable: commit };
  }
}

const DURABLE = Promise.resolve();

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
