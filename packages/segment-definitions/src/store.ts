import type { PoolClient } from "@crm/db";
import { HttpError } from "@crm/errors";
import { findCycle } from "./cycles.ts";
import { checkDefinition, nameProblem, type SegmentDefinition } from "./validate.ts";

export type SegmentStatus = "active" | "archived";

/** A segment as the management API and the CLI show it. */
export interface SegmentRecord {
  id: string;
  business_id: string;
  name: string;
  version: number;
  definition: SegmentDefinition;
  status: SegmentStatus;
  created_at: string;
  updated_at: string;
  /** Contacts in the segment now (segment_memberships, kept by services/segments); an archived one drops to 0. */
  member_count: number;
}

/** One state a segment had: every create, update and archive writes one. */
export interface SegmentVersionRecord {
  version: number;
  name: string;
  definition: SegmentDefinition;
  status: SegmentStatus;
  changed_by: string | null;
  created_at: string;
}

// Every function below runs inside `transaction(pool, tag, fn, { businessId })` of @crm/db: RLS then shows and
// accepts only that business's rows, so an id of another business is simply not found. Each statement names the
// business too: the operator CLI runs as the admin role, which RLS does not restrict.

// member_count is an index-only scan of the primary key, which includes business_id and is_member (migration
// 058); with the tenant set, RLS agrees with the business named here.
const COLUMNS = `id, business_id, name, version, definition, status, created_at, updated_at,
  (SELECT count(*)::int FROM segment_memberships m
   WHERE m.segment_id = segment_definitions.id AND m.business_id = segment_definitions.business_id AND m.is_member)
  AS member_count`;
type Row = Omit<SegmentRecord, "created_at" | "updated_at"> & {
  created_at: Date;
  updated_at: Date;
};

const toRecord = (row: Row): SegmentRecord => ({
  ...row,
  created_at: row.created_at.toISOString(),
  updated_at: row.updated_at.toISOString(),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** True for the string form of a uuid (the only form Postgres's uuid type is given). */
export const isUuid = (value: unknown): value is string => typeof value === "string" && UUID.test(value);

const invalid = (issues: { path: string[]; message: string }[]) =>
  new HttpError(
    400,
    "invalid_request",
    issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; "),
    {
      issues,
    },
  );
const notFound = (id: string) => new HttpError(404, "not_found", `no segment ${id} in this business`);

/** The segments a definition names (each once); stored definitions passed checkDefinition when written. */
export function segmentReferences(definition: unknown): string[] {
  const found = new Set<string>();
  const stack: unknown[] = [definition];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) stack.push(...node);
    else if (node !== null && typeof node === "object") {
      for (const [key, value] of Object.entries(node)) {
        if (key === "segment" && typeof value === "string") found.add(value.toLowerCase());
        else if (key === "all" || key === "any" || key === "not") stack.push(value);
      }
    }
  }
  return [...found];
}

// Two concurrent edits could each add half of a cycle (A names B, B names A) and both pass their check: changes
// to one business's definitions take this lock, so each check sees the other's committed result.
async function lockBusinessDefinitions(client: PoolClient, businessId: string): Promise<void> {
  await client.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [
    `segment_definitions:${businessId}`,
  ]);
}

/**
 * Checks a definition against the business's segments: every segment it names exists, is active and is not
 * `self`, and no chain of references leads back to `self`.
 */
async function checkReferences(
  client: PoolClient,
  businessId: string,
  definition: SegmentDefinition,
  references: string[],
  self: string | undefined,
): Promise<void> {
  if (references.length === 0) return;
  const { rows } = await client.query<{ id: string; status: SegmentStatus; definition: unknown }>(
    "SELECT id, status, definition FROM segment_definitions WHERE business_id = $1",
    [businessId],
  );
  const byId = new Map(rows.map((row) => [row.id, row]));
  const issues = references.flatMap((id) => {
    const row = byId.get(id);
    if (!row) return [{ path: ["definition"], message: `segment ${id} does not exist in this business` }];
    if (row.status !== "active") return [{ path: ["definition"], message: `segment ${id} is archived` }];
    return [];
  });
  if (issues.length > 0) throw invalid(issues);
  if (self === undefined) return; // a new segment: nothing names it yet, so nothing can lead back to it
  const edges = new Map(rows.map((row) => [row.id, segmentReferences(row.definition)]));
  edges.set(self, segmentReferences(definition));
  const cycle = findCycle(self, (id) => edges.get(id) ?? []);
  if (cycle) {
    throw invalid([
      { path: ["definition"], message: `segment references form a cycle: ${cycle.join(" -> ")}` },
    ]);
  }
}

function checkedDefinition(value: unknown): { definition: SegmentDefinition; references: string[] } {
  const checked = checkDefinition(value, ["definition"]);
  if (!checked.ok) throw invalid(checked.issues);
  return checked;
}

function checkedName(value: unknown): string {
  const problem = nameProblem(value);
  if (problem) throw invalid([{ path: ["name"], message: problem }]);
  return (value as string).trim();
}

/**
 * The 400 the store would answer for this name and/or rule, thrown before any connection is taken (the API calls
 * it first, so bad input never waits for or holds a database connection). The store checks again: it is the rule.
 */
export function assertValidSegmentInput(input: { name?: unknown; definition?: unknown }): void {
  if (input.name !== undefined) checkedName(input.name);
  if (input.definition !== undefined) checkedDefinition(input.definition);
}

async function recordVersion(client: PoolClient, row: Row, changedBy: string | null): Promise<void> {
  await client.query(
    `INSERT INTO segment_definition_versions (business_id, segment_id, version, name, definition, status, changed_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [row.business_id, row.id, row.version, row.name, JSON.stringify(row.definition), row.status, changedBy],
  );
}

/** Creates a segment (version 1) after checking its name and rule. */
export async function createSegment(
  client: PoolClient,
  input: { businessId: string; name: unknown; definition: unknown; changedBy: string | null },
): Promise<SegmentRecord> {
  const name = checkedName(input.name);
  const { definition, references } = checkedDefinition(input.definition);
  await lockBusinessDefinitions(client, input.businessId);
  await checkReferences(client, input.businessId, definition, references, undefined);
  const { rows } = await client.query<Row>(
    `INSERT INTO segment_definitions (business_id, name, definition) VALUES ($1, $2, $3) RETURNING ${COLUMNS}`,
    [input.businessId, name, JSON.stringify(definition)],
  );
  await recordVersion(client, rows[0]!, input.changedBy);
  return toRecord(rows[0]!);
}

async function lockedSegment(
  client: PoolClient,
  businessId: string,
  id: string,
  expectedVersion: number | undefined,
): Promise<Row> {
  if (!isUuid(id)) throw notFound(id);
  const { rows } = await client.query<Row>(
    `SELECT ${COLUMNS} FROM segment_definitions WHERE business_id = $1 AND id = $2 FOR UPDATE`,
    [businessId, id],
  );
  const row = rows[0];
  if (!row) throw notFound(id);
  if (expectedVersion !== undefined && row.version !== expectedVersion) {
    throw new HttpError(
      409,
      "version_conflict",
      `segment is at version ${row.version}, not ${expectedVersion}`,
    );
  }
  return row;
}

/** Changes the name and/or rule of an active segment: a new version, the previous one kept in the history. */
export async function updateSegment(
  client: PoolClient,
  input: {
    businessId: string;
    id: string;
    name?: unknown;
    definition?: unknown;
    expectedVersion?: number;
    changedBy: string | null;
  },
): Promise<SegmentRecord> {
  const name = input.name === undefined ? undefined : checkedName(input.name);
  const checked = input.definition === undefined ? undefined : checkedDefinition(input.definition);
  await lockBusinessDefinitions(client, input.businessId);
  const current = await lockedSegment(client, input.businessId, input.id, input.expectedVersion);
  if (current.status !== "active") {
    throw new HttpError(409, "segment_archived", "an archived segment cannot be changed");
  }
  if (checked)
    await checkReferences(client, input.businessId, checked.definition, checked.references, current.id);
  const { rows } = await client.query<Row>(
    `UPDATE segment_definitions
     SET name = $2, definition = $3, version = version + 1, updated_at = now()
     WHERE id = $1 RETURNING ${COLUMNS}`,
    [current.id, name ?? current.name, JSON.stringify(checked?.definition ?? current.definition)],
  );
  await recordVersion(client, rows[0]!, input.changedBy);
  return toRecord(rows[0]!);
}

/**
 * Archives a segment (a new version with status archived); archiving an archived one changes nothing. Refused
 * while an active segment names it, since that one's rule would lose its meaning.
 */
export async function archiveSegment(
  client: PoolClient,
  input: { businessId: string; id: string; expectedVersion?: number; changedBy: string | null },
): Promise<SegmentRecord> {
  await lockBusinessDefinitions(client, input.businessId);
  const current = await lockedSegment(client, input.businessId, input.id, input.expectedVersion);
  if (current.status === "archived") return toRecord(current);
  const { rows: others } = await client.query<{ id: string; definition: unknown }>(
    "SELECT id, definition FROM segment_definitions WHERE business_id = $1 AND status = 'active' AND id <> $2",
    [input.businessId, current.id],
  );
  const users = others
    .filter((row) => segmentReferences(row.definition).includes(current.id))
    .map((r) => r.id);
  if (users.length > 0) {
    throw new HttpError(409, "segment_in_use", `active segments name this one: ${users.join(", ")}`);
  }
  const { rows } = await client.query<Row>(
    `UPDATE segment_definitions SET status = 'archived', version = version + 1, updated_at = now()
     WHERE id = $1 RETURNING ${COLUMNS}`,
    [current.id],
  );
  await recordVersion(client, rows[0]!, input.changedBy);
  return toRecord(rows[0]!);
}

/** The business's segments, oldest first; `status` "all" includes archived ones. */
export async function listSegments(
  client: PoolClient,
  businessId: string,
  status: SegmentStatus | "all" = "active",
): Promise<SegmentRecord[]> {
  const { rows } = await client.query<Row>(
    `SELECT ${COLUMNS} FROM segment_definitions WHERE business_id = $1 AND ($2 = 'all' OR status = $2) ORDER BY created_at, id`,
    [businessId, status],
  );
  return rows.map(toRecord);
}

/** One segment of the business (404 for an id of another business: RLS does not show it). */
export async function getSegment(client: PoolClient, businessId: string, id: string): Promise<SegmentRecord> {
  if (!isUuid(id)) throw notFound(id);
  const { rows } = await client.query<Row>(
    `SELECT ${COLUMNS} FROM segment_definitions WHERE business_id = $1 AND id = $2`,
    [businessId, id],
  );
  if (!rows[0]) throw notFound(id);
  return toRecord(rows[0]);
}

/** Every version of a segment, oldest first. */
export async function segmentVersions(
  client: PoolClient,
  businessId: string,
  id: string,
): Promise<SegmentVersionRecord[]> {
  await getSegment(client, businessId, id);
  const { rows } = await client.query<Omit<SegmentVersionRecord, "created_at"> & { created_at: Date }>(
    `SELECT version, name, definition, status, changed_by, created_at FROM segment_definition_versions
     WHERE business_id = $1 AND segment_id = $2 ORDER BY version`,
    [businessId, id],
  );
  return rows.map((row) => ({ ...row, created_at: row.created_at.toISOString() }));
}
