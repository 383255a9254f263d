import type { PoolClient } from "@crm/db";
import {
  type EvaluationRow,
  type EvaluationScope,
  evaluationQuery,
  type StoredSegment,
} from "./compile-sql.ts";
import type { SegmentDefinition } from "./validate.ts";

/** The business's active segments by (lower-case) id: what evaluation compiles. Run with the tenant set. */
export async function activeSegments(
  client: PoolClient,
  businessId: string,
): Promise<Map<string, StoredSegment>> {
  const { rows } = await client.query<{ id: string; version: number; definition: SegmentDefinition }>(
    "SELECT id::text, version, definition FROM segment_definitions WHERE business_id = $1 AND status = 'active'",
    [businessId],
  );
  return new Map(rows.map((row) => [row.id, row]));
}

/**
 * Evaluates `targets` for the contacts of `scope` at `now` with the compiled query of compile-sql.ts: the same
 * statement for backfill, incremental re-evaluation, the sweep and the tests' from-scratch oracle.
 */
export async function evaluateSegments(
  client: PoolClient,
  input: {
    businessId: string;
    segments: ReadonlyMap<string, StoredSegment>;
    targets: readonly string[];
    scope: EvaluationScope;
    now: Date;
  },
): Promise<EvaluationRow[]> {
  const query = evaluationQuery(input);
  const { rows } = await client.query<EvaluationRow>(query.text, query.values);
  return rows;
}
