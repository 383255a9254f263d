import { isTransientDbError, type Pool, type PoolClient, transaction } from "@crm/db";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import {
  archiveSegment,
  assertValidSegmentInput,
  createSegment,
  getSegment,
  isUuid,
  listSegments,
  segmentVersions,
  updateSegment,
} from "@crm/segment-definitions";
import { Hono } from "hono";
import type { Caller } from "../auth.ts";
import { type AppVariables, bodySource, readJsonBody, readOptionalJsonBody } from "../http.ts";
import { parseOr400 } from "../ingest.ts";
import {
  ArchiveSegmentBody,
  CreateSegmentBody,
  ListStatus,
  MAX_MANAGE_BODY_BYTES,
  UpdateSegmentBody,
} from "../manage-schema.ts";

/**
 * `/v1/manage/segments` (issue 16.1, SPEC 11 "Management API"): segment definitions of a business, for its owner
 * and team members with a user token. The business is `business_id` (body or query), else the caller's only one;
 * every statement runs with that tenant set, so an id of another business is 404 and another business named is 403.
 */
export function manageSegmentRoutes(pool: Pool) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/segments", async (c) => {
    const body = parseOr400(CreateSegmentBody, await readJsonBody(bodySource(c), MAX_MANAGE_BODY_BYTES));
    const { businessId, userId } = await tenantOf(c.get("caller"), body.business_id);
    assertValidSegmentInput({ name: body.name, definition: body.definition ?? null });
    const segment = await inTenant(
      pool,
      "segments.create",
      (client) =>
        createSegment(client, {
          businessId,
          name: body.name,
          definition: body.definition,
          changedBy: userId,
        }),
      { businessId },
    );
    return c.json({ ok: true, segment }, 201);
  });

  app.get("/segments", async (c) => {
    const status = parseOr400(ListStatus, c.req.query("status") ?? "active", ["status"]);
    const { businessId } = await tenantOf(c.get("caller"), c.req.query("business_id"));
    const segments = await inTenant(
      pool,
      "segments.list",
      (client) => listSegments(client, businessId, status),
      {
        businessId,
      },
    );
    return c.json({ ok: true, segments });
  });

  app.get("/segments/:id", async (c) => {
    const { businessId } = await tenantOf(c.get("caller"), c.req.query("business_id"));
    const segment = await inTenant(
      pool,
      "segments.get",
      (client) => getSegment(client, businessId, c.req.param("id")),
      {
        businessId,
      },
    );
    return c.json({ ok: true, segment });
  });

  app.get("/segments/:id/versions", async (c) => {
    const { businessId } = await tenantOf(c.get("caller"), c.req.query("business_id"));
    const versions = await inTenant(
      pool,
      "segments.versions",
      (client) => segmentVersions(client, businessId, c.req.param("id")),
      { businessId },
    );
    return c.json({ ok: true, versions });
  });

  app.patch("/segments/:id", async (c) => {
    const body = parseOr400(UpdateSegmentBody, await readJsonBody(bodySource(c), MAX_MANAGE_BODY_BYTES));
    const { businessId, userId } = await tenantOf(
      c.get("caller"),
      body.business_id ?? c.req.query("business_id"),
    );
    assertValidSegmentInput(body);
    const segment = await inTenant(
      pool,
      "segments.update",
      (client) =>
        updateSegment(client, {
          businessId,
          id: c.req.param("id"),
          name: body.name,
          definition: body.definition,
          expectedVersion: body.expected_version,
          changedBy: userId,
        }),
      { businessId },
    );
    return c.json({ ok: true, segment });
  });

  app.post("/segments/:id/archive", async (c) => {
    // the body is optional: without one, the segment is archived whatever its version
    const raw = await readOptionalJsonBody(bodySource(c), MAX_MANAGE_BODY_BYTES);
    const body = parseOr400(ArchiveSegmentBody, raw ?? {});
    const { businessId, userId } = await tenantOf(
      c.get("caller"),
      body.business_id ?? c.req.query("business_id"),
    );
    const segment = await inTenant(
      pool,
      "segments.archive",
      (client) =>
        archiveSegment(client, {
          businessId,
          id: c.req.param("id"),
          expectedVersion: body.expected_version,
          changedBy: userId,
        }),
      { businessId },
    );
    return c.json({ ok: true, segment });
  });

  return app;
}

/** The business a management request acts on, and who asks (SPEC 4 tenant check, user tokens only). */
export async function tenantOf(
  caller: Caller,
  named: string | undefined,
): Promise<{ businessId: string; userId: string }> {
  if (caller.kind !== "user") {
    throw new HttpError(403, "user_token_required", "the management API takes user tokens, not ingest keys");
  }
  const allowed = await caller.businesses();
  if (named === undefined) {
    if (allowed.length === 1) return { businessId: allowed[0]!.businessId, userId: caller.id };
    if (allowed.length === 0) throw forbidden();
    throw new HttpError(
      400,
      "business_required",
      "caller belongs to several businesses; name one in business_id",
    );
  }
  if (!isUuid(named)) {
    throw new HttpError(400, "invalid_request", "business_id: must be a uuid", {
      issues: [{ path: ["business_id"], message: "must be a uuid" }],
    });
  }
  const match = allowed.find((b) => b.businessId === named.toLowerCase());
  if (!match) throw forbidden();
  return { businessId: match.businessId, userId: caller.id };
}

const forbidden = () => new HttpError(403, "forbidden_business", "caller may not manage this business");

/**
 * One transaction of the business's tenant. Postgres unreachable, or a statement that lost a race (deadlock,
 * serialization), is 503 `unavailable` with Retry-After: retrying can help, and nothing was written.
 */
export async function inTenant<T>(
  pool: Pool,
  tag: string,
  fn: (client: PoolClient) => Promise<T>,
  options: { businessId: string },
): Promise<T> {
  try {
    return await transaction(pool, tag, fn, options);
  } catch (error) {
    if (!(error instanceof HttpError) && isTransientDbError(error)) {
      throw new DependencyUnavailableError("postgres", "segment definitions could not be read or written", {
        cause: error,
      });
    }
    throw error;
  }
}
