import { createHash } from "node:crypto";
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
  // A named statement: each connection plans a given rule set once (planning is most of a small evaluation's cost),
  // then runs it with new values. Same text = same rules, targets and scope kind.
  const name = `segments_${createHash("sha256").update(query.text).digest("hex").slice(0, 24)}`;
  const { rows } = await client.query<EvaluationRow>({ name, text: query.text, values: query.values });
  return rows;
}
