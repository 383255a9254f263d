import { DependencyUnavailableError } from "@crm/errors";
import pg from "pg";

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
export type QueryResult = pg.QueryResult;

/** A connection pool with the settings every service uses: bounded size, bounded connect time, app name set. */
export function createPool(options: {
  connectionString: string;
  max?: number;
  applicationName: string;
  /** Server settings of every session (`-c name=value` each), e.g. { plan_cache_mode: "force_generic_plan" }. */
  settings?: Record<string, string>;
}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    application_name: options.applicationName,
    ...(options.settings
      ? {
          options: Object.entries(options.settings)
            .map(([name, value]) => `-c ${name}=${value}`)
            .join(" "),
        }
      : {}),
  });
  // An idle client losing its server must not crash the process; the next checkout reconnects.
  pool.on("error", () => {});
  return pool;
}

export interface TransactionOptions {
  /** The tenant of this transaction; RLS policies read it. Without one the service role sees no tenant rows. */
  businessId?: string;
  /** Called with the wall time of the transaction, for metrics. */
  onTiming?: (tag: string, ms: number) => void;
  /**
   * Every statement of `transaction` reads one snapshot (REPEATABLE READ, READ ONLY): for readers that compare
   * several tables written together and must not see a commit land between two of their reads.
   */
  snapshot?: boolean;
}

/** Errno codes of a connection that could not be made or was lost: the server gave no answer. */
const CONNECTION_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** A server shutting down or starting up: it refuses every statement, not this one. */
const SERVER_GOING_AWAY_SQLSTATES = new Set(["57P01", "57P02", "57P03"]);

/** What node-postgres says of a connection that ended or never came (these errors carry no code). */
const CONNECTION_LOST_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|not queryable|Connection is closed/i;

/** A statement that lost a race with another transaction or hit a momentary limit: the same one can succeed. */
const TRANSIENT_SQLSTATES = new Set(["40001", "40P01", "55P03", "53300"]);

const codeOf = (error: unknown): string => (error as { code?: unknown } | null)?.code?.toString() ?? "";

/**
 * True when the database did not answer: no connection (refused, reset, timed out, lost mid-statement, pool
 * checkout failed) or a server shutting down or starting (57P01-57P03). Any other error carrying a SQLSTATE came
 * from a live server about this statement (08P01 "invalid message format" included): it is not an outage.
 */
/** True when Postgres answers `SELECT 1` within `timeoutMs` (the readiness probes of the services). */
export async function postgresAnswers(pool: pg.Pool, timeoutMs = 2_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      pool.query("SELECT 1").then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function isConnectionFailure(error: unknown): boolean {
  if (error instanceof DependencyUnavailableError) return true;
  const code = codeOf(error);
  if (CONNECTION_ERRNOS.has(code) || SERVER_GOING_AWAY_SQLSTATES.has(code)) return true;
  return code === "" && error instanceof Error && CONNECTION_LOST_MESSAGE.test(error.message);
}

/**
 * True when the same statement is worth retrying: a connection failure, a serialization failure, a deadlock, a
 * lock timeout or too many connections.
 */
export function isTransientDbError(error: unknown): boolean {
  return isConnectionFailure(error) || TRANSIENT_SQLSTATES.has(codeOf(error));
}

/**
 * Runs `fn` in one transaction: BEGIN, tenant set with `set_config(..., true)` (transaction-local, so a pooled
 * connection never carries a tenant into the next transaction), COMMIT, or ROLLBACK on any error. The client is
 * always released; a client whose connection broke is destroyed rather than returned to the pool.
 */
export async function transaction<T>(
  pool: pg.Pool,
  tag: string,
  fn: (client: pg.PoolClient) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  return inTransaction(pool, tag, options, async (client) => {
    // BEGIN and the tenant in one message: one round trip (the id is a literal by pg's own escaping).
    const begin = options.snapshot
      ? `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY /* ${tag} */`
      : `BEGIN /* ${tag} */`;
    await client.query(
      options.businessId
        ? `${begin}; SELECT set_config('app.business_id', ${sqlLiteral(options.businessId)}, true)`
        : begin,
    );
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  });
}

/** A value as an SQL literal (pg's own escaping; NULL for null), for statements that cannot take parameters. */
export function sqlLiteral(value: string | null): string {
  return value === null ? "NULL" : pg.escapeLiteral(value);
}

/**
 * A transaction of one statement (values inlined with `sqlLiteral`) in ONE round trip: BEGIN, the tenant, the
 * statement and COMMIT reach the server as one simple-protocol message. Locks the statement takes are released
 * by the server right after it instead of being held while the client turns around (on a busy event loop that
 * turnaround is most of the time a lock is held), and the transaction costs one round trip instead of four.
 * Same guarantees as `transaction`. Returns the statement's rows and `commitMs`, the server's time from the end
 * of the statement to the end of COMMIT (clock_timestamp() on both sides of it, in the same message).
 */
export async function transactionOfOne<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  tag: string,
  statement: string,
  options: TransactionOptions = {},
): Promise<{ rows: R[]; commitMs: number }> {
  const tenant = options.businessId
    ? `SELECT set_config('app.business_id', ${sqlLiteral(options.businessId)}, true);`
    : "";
  const now = "SELECT extract(epoch FROM clock_timestamp())::float8 AS at";
  return inTransaction(pool, tag, options, async (client) => {
    const results = (await client.query(
      `BEGIN /* ${tag} */; ${tenant} ${statement}; ${now}; COMMIT; ${now}`,
    )) as unknown as pg.QueryResult[];
    const at = (result: pg.QueryResult | undefined) => Number(result?.rows[0]?.at);
    return {
      rows: results.at(-4)!.rows as R[],
      commitMs: (at(results.at(-1)) - at(results.at(-3))) * 1_000,
    };
  });
}

/** Checkout, ROLLBACK when `run` fails, release (destroying a broken client), timing: shared by both helpers. */
async function inTransaction<T>(
  pool: pg.Pool,
  tag: string,
  options: TransactionOptions,
  run: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const started = performance.now();
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (error) {
    throw new DependencyUnavailableError("postgres", `cannot connect for ${tag}`, { cause: error });
  }
  let broken: Error | undefined;
  // pg emits a lost connection as an 'error' event on the client as well as rejecting its query; pg-pool listens
  // only while the client is idle, so without this a Postgres crash mid-transaction kills the process.
  const onConnectionError = (error: Error) => {
    broken ??= error;
  };
  client.on("error", onConnectionError);
  try {
    return await run(client);
  } catch (error) {
    try {
      await client.query("ROLLBACK");
    } catch (rollbackError) {
      broken = rollbackError as Error;
    }
    throw error;
  } finally {
    client.off("error", onConnectionError);
    client.release(broken);
    options.onTiming?.(tag, performance.now() - started);
  }
}

/**
 * Refuses to run as a role that could read across tenants: a superuser, a BYPASSRLS role, or the owner of a
 * tenant table (owners skip RLS unless it is forced; we force it, but owning is still more than a service needs).
 */
export async function assertCannotBypassRls(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query<{
    rolname: string;
    rolsuper: boolean;
    rolbypassrls: boolean;
    owned: number;
  }>(
    `SELECT r.rolname, r.rolsuper, r.rolbypassrls,
            (SELECT count(*)::int FROM pg_class c WHERE c.relowner = r.oid AND c.relkind = 'r') AS owned
     FROM pg_roles r WHERE r.rolname = current_user`,
  );
  const role = rows[0];
  if (!role) throw new Error("cannot read the current role");
  if (role.rolsuper || role.rolbypassrls || role.owned > 0) {
    throw new Error(
      `refusing to start: role ${role.rolname} can bypass row level security ` +
        `(superuser=${role.rolsuper}, bypassrls=${role.rolbypassrls}, owns ${role.owned} tables); ` +
        "use the service role (DATABASE_URL)",
    );
  }
}
