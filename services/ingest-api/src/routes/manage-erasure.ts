import type { Pool } from "@crm/db";
import { DependencyUnavailableError, HttpError } from "@crm/errors";
import { Hono } from "hono";
import { z } from "zod";
import type { Caller } from "../auth.ts";
import {
  type ErasureTarget,
  erasePerson,
  isOwner,
  liftSuppression,
  listAudit,
  normalizeTarget,
  TARGET_TYPES,
  type TargetType,
} from "../erasure.ts";
import { type AppVariables, bodySource, readJsonBody } from "../http.ts";
import { parseOr400 } from "../ingest.ts";
import { tenantOf } from "./manage-segments.ts";

/** An erasure or lift request is a few identifiers: 8 KiB is plenty. */
const MAX_ERASURE_BODY_BYTES = 8 * 1024;

// Raw identifiers are bounded as the edge bounds them (an email at most 254 after normalization; 1024 leaves room
// for the format characters normalization removes); @crm/identity decides what is valid.
const Identifier = z.string().min(1).max(1_024);
const identifierFields = {
  external_id: Identifier.optional(),
  email: Identifier.optional(),
  phone: Identifier.optional(),
  anonymous_id: Identifier.optional(),
};
const exactlyOne = (types: readonly string[]) => (body: Record<string, unknown>) =>
  types.filter((type) => body[type] !== undefined).length === 1;

export const EraseBody = z
  .strictObject({ business_id: z.uuid().optional(), ...identifierFields, contact_id: Identifier.optional() })
  .refine(exactlyOne(TARGET_TYPES), {
    message: "name exactly one of external_id, email, phone, anonymous_id, contact_id",
  });

export const LiftBody = z
  .strictObject({ business_id: z.uuid().optional(), ...identifierFields })
  .refine(exactlyOne(TARGET_TYPES.filter((type) => type !== "contact_id")), {
    message: "name exactly one of external_id, email, phone, anonymous_id",
  });

/**
 * `/v1/manage/erasures` and `/v1/manage/suppressions` (issue 18): erase a person, lift a suppression, read the
 * audit. Owner of the business only (a team member gets 403 `owner_required`, another business 403
 * `forbidden_business`), user tokens only.
 */
export function manageErasureRoutes(pool: Pool, secret: string | undefined) {
  const app = new Hono<{ Variables: AppVariables }>();

  app.post("/erasures", async (c) => {
    const body = parseOr400(EraseBody, await readJsonBody(bodySource(c), MAX_ERASURE_BODY_BYTES));
    const owner = await ownerOf(pool, c.get("caller"), body.business_id);
    const target = targetOf(body, owner.country);
    const result = await erasePerson(pool, {
      businessId: owner.businessId,
      target,
      actor: `user:${owner.userId}`,
      secret: requireSecret(secret),
    });
    return c.json({
      ok: true,
      erasure: { id: result.erasureId, contact_ids: result.contactIds, counts: result.counts },
    });
  });

  app.get("/erasures", async (c) => {
    const owner = await ownerOf(pool, c.get("caller"), c.req.query("business_id"));
    return c.json({ ok: true, erasures: await listAudit(pool, owner.businessId) });
  });

  app.post("/suppressions/lift", async (c) => {
    const body = parseOr400(LiftBody, await readJsonBody(bodySource(c), MAX_ERASURE_BODY_BYTES));
    const owner = await ownerOf(pool, c.get("caller"), body.business_id);
    const target = targetOf(body, owner.country) as Exclude<ErasureTarget, { type: "contact_id" }>;
    const lifted = await liftSuppression(pool, {
      businessId: owner.businessId,
      target,
      actor: `user:${owner.userId}`,
      secret: requireSecret(secret),
    });
    if (lifted === 0) throw new HttpError(404, "not_found", "this identifier is not suppressed");
    return c.json({ ok: true, lifted });
  });

  return app;
}

function targetOf(body: Partial<Record<TargetType, string>>, country: string): ErasureTarget {
  const type = TARGET_TYPES.find((name) => body[name] !== undefined)!;
  return normalizeTarget(type, body[type]!, country);
}

/** The business the caller owns and names (or its only one): 403 for a team member or another business. */
async function ownerOf(
  pool: Pool,
  caller: Caller,
  named: string | undefined,
): Promise<{ businessId: string; userId: string; country: string }> {
  const { businessId, userId } = await tenantOf(caller, named);
  if (!(await isOwner(pool, businessId, userId))) {
    throw new HttpError(403, "owner_required", "only the business's owner may erase or lift a suppression");
  }
  const access = caller.kind === "user" ? await caller.businesses() : [];
  const country = access.find((b) => b.businessId === businessId)?.defaultCountry ?? "US";
  return { businessId, userId, country };
}

function requireSecret(secret: string | undefined): string {
  if (!secret) {
    throw new DependencyUnavailableError("erasure", "ERASURE_HASH_SECRET is not configured on this instance");
  }
  return secret;
}

/** Components and paths of the erasure routes, merged into the OpenAPI document of app.ts. */
export function erasureOpenApi(error: (description: string) => object) {
  const schema = (zod: z.ZodType) =>
    z.toJSONSchema(zod, { io: "input", target: "draft-2020-12", unrepresentable: "any" });
  const common = {
    "400": error("invalid_request (with issues) or business_required"),
    "401": error("unauthorized"),
    "403": error("owner_required, forbidden_business, or user_token_required for an ingest key"),
    "413": error("payload_too_large"),
    "503": error("unavailable (Postgres, or ERASURE_HASH_SECRET not configured)"),
  };
  return {
    schemas: { EraseBody: schema(EraseBody), LiftBody: schema(LiftBody) },
    paths: {
      "/v1/manage/erasures": {
        post: {
          summary:
            "Erase a person (and every contact merged into it) and suppress its identifiers (issue 18)",
          requestBody: {
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/EraseBody" } } },
          },
          responses: {
            "200": {
              description: "erasure id (audit id, cause_event_id of `erased`), erased contact ids, counts",
            },
            "404": error("not_found (contact_id of no contact of the business)"),
            ...common,
          },
        },
        get: {
          summary: "The business's erasures and suppression lifts, newest first (no identifiers)",
          parameters: [
            { name: "business_id", in: "query", required: false, schema: { type: "string", format: "uuid" } },
          ],
          responses: { "200": { description: "the audit" }, ...common },
        },
      },
      "/v1/manage/suppressions/lift": {
        post: {
          summary: "Lift the suppression of one identifier (the person came back and consented)",
          requestBody: {
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/LiftBody" } } },
          },
          responses: {
            "200": { description: "lifted: 1" },
            "404": error("not_found (not suppressed)"),
            ...common,
          },
        },
      },
    },
  };
}
