import {
  CreateEndpointBody,
  CreateTriggerBody,
  createEndpoint,
  createTrigger,
  DeliveryStatus,
  deleteEndpoint,
  deleteTrigger,
  getDelivery,
  getEndpoint,
  getTrigger,
  isOwner,
  listDeliveries,
  listEndpoints,
  listTriggers,
  RotateSecretBody,
  replayDelivery,
  rotateEndpointSecret,
  UpdateEndpointBody,
  UpdateTriggerBody,
  updateEndpoint,
  updateTrigger,
} from "@crm/automations";
import type { Pool, PoolClient } from "@crm/db";
import { HttpError } from "@crm/errors";
import { Hono } from "hono";
import { z } from "zod";
import { type AppVariables, bodySource, readJsonBody, readOptionalJsonBody } from "../http.ts";
import { parseOr400 } from "../ingest.ts";
import { MAX_MANAGE_BODY_BYTES } from "../manage-schema.ts";
import { inTenant, tenantOf } from "./manage-segments.ts";

const Limit = z.coerce.number().int().min(1).max(500);
/** Default overlap of a rotation: the old secret signs too for a day (as Svix does). */
const DEFAULT_OVERLAP_SECONDS = 24 * 3600;

/**
 * `/v1/manage/automations/...` (issue 17): triggers, webhook endpoints and the delivery log of a business, for its
 * owner and team members with a user token, as `/v1/manage/segments`. What reveals or replaces an endpoint secret
 * (creating an endpoint, rotating, deleting) is the owner's only (SPEC 11: secrets, owner only): 403 owner_required.
 * `secretKey` seals secrets at rest (AUTOMATIONS_SECRET_KEY); without it, those routes answer 503.
 */
export function manageAutomationRoutes(pool: Pool, secretKey: Buffer | undefined) {
  const app = new Hono<{ Variables: AppVariables }>();

  const run = async <T>(
    c: { get: (key: "caller") => AppVariables["caller"] },
    named: string | undefined,
    tag: string,
    fn: (client: PoolClient, businessId: string) => Promise<T>,
    options: { ownerOnly?: boolean } = {},
  ): Promise<T> => {
    const { businessId, userId } = await tenantOf(c.get("caller"), named);
    return inTenant(
      pool,
      `automations.${tag}`,
      async (client) => {
        if (options.ownerOnly && !(await isOwner(client, businessId, userId))) {
          throw new HttpError(
            403,
            "owner_required",
            "only the business's owner may see or change endpoint secrets",
          );
        }
        return fn(client, businessId);
      },
      { businessId },
    );
  };
  const key = (): Buffer => {
    if (!secretKey) {
      throw new HttpError(
        503,
        "unavailable",
        "webhook secrets cannot be sealed: AUTOMATIONS_SECRET_KEY is not set",
      );
    }
    return secretKey;
  };
  const body = async <T extends z.ZodType>(c: Parameters<typeof bodySource>[0], schema: T) =>
    parseOr400(schema, await readJsonBody(bodySource(c), MAX_MANAGE_BODY_BYTES));
  const optionalBody = async <T extends z.ZodType>(c: Parameters<typeof bodySource>[0], schema: T) =>
    parseOr400(schema, (await readOptionalJsonBody(bodySource(c), MAX_MANAGE_BODY_BYTES)) ?? {});
  const query = (c: { req: { query: (name: string) => string | undefined } }) => c.req.query("business_id");

  // ------------------------------------------------------------------------------------------------ endpoints
  app.post("/automations/endpoints", async (c) => {
    const input = await body(c, CreateEndpointBody);
    const created = await run(
      c,
      input.business_id,
      "endpoints.create",
      (client, b) => createEndpoint(client, key(), b, input),
      {
        ownerOnly: true,
      },
    );
    return c.json({ ok: true, endpoint: created.endpoint, secret: created.secret }, 201);
  });
  app.get("/automations/endpoints", async (c) => {
    const endpoints = await run(c, query(c), "endpoints.list", listEndpoints);
    return c.json({ ok: true, endpoints });
  });
  app.get("/automations/endpoints/:id", async (c) => {
    const endpoint = await run(c, query(c), "endpoints.get", (client, b) =>
      getEndpoint(client, b, c.req.param("id")),
    );
    return c.json({ ok: true, endpoint });
  });
  app.patch("/automations/endpoints/:id", async (c) => {
    const input = await body(c, UpdateEndpointBody);
    const endpoint = await run(c, input.business_id ?? query(c), "endpoints.update", (client, b) =>
      updateEndpoint(client, b, c.req.param("id"), input),
    );
    return c.json({ ok: true, endpoint });
  });
  app.post("/automations/endpoints/:id/rotate-secret", async (c) => {
    const input = await optionalBody(c, RotateSecretBody);
    const rotated = await run(
      c,
      input.business_id ?? query(c),
      "endpoints.rotate",
      (client, b) =>
        rotateEndpointSecret(
          client,
          key(),
          b,
          c.req.param("id"),
          input.overlap_seconds ?? DEFAULT_OVERLAP_SECONDS,
        ),
      { ownerOnly: true },
    );
    return c.json({ ok: true, endpoint: rotated.endpoint, secret: rotated.secret });
  });
  app.delete("/automations/endpoints/:id", async (c) => {
    await run(c, query(c), "endpoints.delete", (client, b) => deleteEndpoint(client, b, c.req.param("id")), {
      ownerOnly: true,
    });
    return c.json({ ok: true });
  });

  // ------------------------------------------------------------------------------------------------- triggers
  app.post("/automations/triggers", async (c) => {
    const input = await body(c, CreateTriggerBody);
    const trigger = await run(c, input.business_id, "triggers.create", (client, b) =>
      createTrigger(client, b, input),
    );
    return c.json({ ok: true, trigger }, 201);
  });
  app.get("/automations/triggers", async (c) => {
    const triggers = await run(c, query(c), "triggers.list", listTriggers);
    return c.json({ ok: true, triggers });
  });
  app.get("/automations/triggers/:id", async (c) => {
    const trigger = await run(c, query(c), "triggers.get", (client, b) =>
      getTrigger(client, b, c.req.param("id")),
    );
    return c.json({ ok: true, trigger });
  });
  app.patch("/automations/triggers/:id", async (c) => {
    const input = await body(c, UpdateTriggerBody);
    const trigger = await run(c, input.business_id ?? query(c), "triggers.update", (client, b) =>
      updateTrigger(client, b, c.req.param("id"), input),
    );
    return c.json({ ok: true, trigger });
  });
  app.delete("/automations/triggers/:id", async (c) => {
    await run(c, query(c), "triggers.delete", (client, b) => deleteTrigger(client, b, c.req.param("id")));
    return c.json({ ok: true });
  });

  // ----------------------------------------------------------------------------------------------- deliveries
  app.get("/automations/deliveries", async (c) => {
    const status = parseOr400(DeliveryStatus, c.req.query("status") ?? "all", ["status"]);
    const limit = parseOr400(Limit, c.req.query("limit") ?? "50", ["limit"]);
    const deliveries = await run(c, query(c), "deliveries.list", (client, b) =>
      listDeliveries(client, b, {
        status,
        limit,
        endpointId: c.req.query("endpoint_id"),
        triggerId: c.req.query("trigger_id"),
        messageId: c.req.query("message_id"),
      }),
    );
    return c.json({ ok: true, deliveries });
  });
  app.get("/automations/deliveries/:id", async (c) => {
    const delivery = await run(c, query(c), "deliveries.get", (client, b) =>
      getDelivery(client, b, c.req.param("id")),
    );
    return c.json({ ok: true, delivery });
  });
  app.post("/automations/deliveries/:id/replay", async (c) => {
    const input = await optionalBody(c, z.strictObject({ business_id: z.uuid().optional() }));
    const delivery = await run(c, input.business_id ?? query(c), "deliveries.replay", (client, b) =>
      replayDelivery(client, b, c.req.param("id")),
    );
    return c.json({ ok: true, delivery });
  });

  return app;
}
