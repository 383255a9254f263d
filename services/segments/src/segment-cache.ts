import type { PoolClient } from "@crm/db";
import {
  activeSegments,
  type SegmentInputs,
  type StoredSegment,
  segmentInputs,
} from "@crm/segment-definitions";

/** The versions of the business `business` (an SQL expression) names, as one text: a scalar subquery. */
export const signatureSql = (
  business: string,
) => `(SELECT string_agg(id::text || ':' || version, ',' ORDER BY id)
  FROM segment_definitions WHERE business_id = ${business} AND status = 'active')`;

/** A business's active segments as evaluation needs them: definitions, and what can change each one's result. */
export interface BusinessSegments {
  /** "id:version,..." of the active segments, sorted: equal signatures mean equal definitions. */
  signature: string;
  segments: Map<string, StoredSegment>;
  inputs: Map<string, SegmentInputs>;
}

/**
 * The active segments per business, re-read only when their versions changed. `get` runs inside the caller's
 * transaction AFTER it locked its contacts: a definition committed before that is seen, so a result written under
 * the lock is never one of a version a concurrent reconcile job already replaced.
 */
export class SegmentCache {
  private readonly byBusiness = new Map<string, BusinessSegments>();

  constructor(private readonly capacity = 10_000) {}

  /** `signature`: signatureSql's value, when the caller read it in a statement of its own. */
  async get(client: PoolClient, businessId: string, known?: string): Promise<BusinessSegments> {
    let signature = known;
    if (signature === undefined) {
      const { rows } = await client.query<{ signature: string | null }>(
        `SELECT ${signatureSql("$1")} AS signature`,
        [businessId],
      );
      signature = rows[0]?.signature ?? "";
    }
    const cached = this.byBusiness.get(businessId);
    if (cached && cached.signature === signature) return cached;
    const segments = await activeSegments(client, businessId);
    const inputs = new Map<string, SegmentInputs>();
    for (const id of segments.keys()) {
      try {
        inputs.set(id, segmentInputs(segments, id));
      } catch {
        // A definition that cannot be compiled (it passed the store's checks, so only a concurrent edit race):
        // left out of incremental evaluation; its reconcile job reports it.
      }
    }
    const entry = { signature: [...segments.values()].length === 0 ? "" : signature, segments, inputs };
    this.byBusiness.delete(businessId);
    this.byBusiness.set(businessId, entry);
    if (this.byBusiness.size > this.capacity) {
      const oldest = this.byBusiness.keys().next().value;
      if (oldest !== undefined) this.byBusiness.delete(oldest);
    }
    return entry;
  }
}
