import {
  CreateEndpointBody,
  CreateTriggerBody,
  RotateSecretBody,
  UpdateEndpointBody,
  UpdateTriggerBody,
} from "@crm/automations";
import { z } from "zod";

// The OpenAPI part of `/v1/manage/automations/...` (issue 17), generated from the zod schemas that validate the
// requests (@crm/automations). `where` and `contact_filter` are pieces of the segment rule language: their
// component is SegmentDefinition (manage-schema.ts).

const jsonSchema = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { io: "input", target: "draft-2020-12", unrepresentable: "any" });

/** Components and paths merged into the OpenAPI document of app.ts. */
export function automationsOpenApi(error: (description: string) => object) {
  const json = (ref: string) => ({ "application/json": { schema: { $ref: `#/components/schemas/${ref}` } } });
  const businessQuery = {
    name: "business_id",
    in: "query",
    required: false,
    schema: { type: "string", format: "uuid" },
    description: "the business; default the caller's only one",
  };
  const idPath = { name: "id", in: "path", required: true, schema: { type: "string", format: "uuid" } };
  const common = {
    "400": error("invalid_request (with issues) or business_required"),
    "401": error("unauthorized"),
    "403": error("forbidden_business, user_token_required, or owner_required (secrets are the owner's)"),
    "413": error("payload_too_large"),
  };
  const found = { "404": error("not_found") };
  const done = (description: string) => ({
    description,
    content: { "application/json": { schema: { type: "object" } } },
  });
  const base = "/v1/manage/automations";
  return {
    schemas: {
      CreateEndpointBody: jsonSchema(CreateEndpointBody),
      UpdateEndpointBody: jsonSchema(UpdateEndpointBody),
      RotateSecretBody: jsonSchema(RotateSecretBody),
      CreateTriggerBody: jsonSchema(CreateTriggerBody),
      UpdateTriggerBody: jsonSchema(UpdateTriggerBody),
    },
    paths: {
      [`${base}/endpoints`]: {
        post: {
          summary: "Create a webhook endpoint (owner only); the response holds its whsec_ secret, shown once",
          requestBody: { required: true, content: json("CreateEndpointBody") },
          responses: { "201": done("{ok, endpoint, secret}"), ...common },
        },
        get: {
          summary: "The business's endpoints",
          parameters: [businessQuery],
          responses: { "200": done("{ok, endpoints}"), ...common },
        },
      },
      [`${base}/endpoints/{id}`]: {
        get: {
          summary: "One endpoint",
          parameters: [idPath, businessQuery],
          responses: { "200": done("{ok, endpoint}"), ...found, ...common },
        },
        patch: {
          summary: "Change url, description, event-type filter or enabled",
          parameters: [idPath, businessQuery],
          requestBody: { required: true, content: json("UpdateEndpointBody") },
          responses: { "200": done("{ok, endpoint}"), ...found, ...common },
        },
        delete: {
          summary: "Delete an endpoint with its deliveries (owner only)",
          parameters: [idPath, businessQuery],
          responses: { "200": done("{ok}"), ...found, ...common },
        },
      },
      [`${base}/endpoints/{id}/rotate-secret`]: {
        post: {
          summary: "A new secret (owner only); the old one also signs for overlap_seconds (default 86400)",
          parameters: [idPath, businessQuery],
          requestBody: { required: false, content: json("RotateSecretBody") },
          responses: { "200": done("{ok, endpoint, secret}"), ...found, ...common },
        },
      },
      [`${base}/triggers`]: {
        post: {
          summary: "Create a trigger",
          requestBody: { required: true, content: json("CreateTriggerBody") },
          responses: { "201": done("{ok, trigger}"), ...common },
        },
        get: {
          summary: "The business's triggers",
          parameters: [businessQuery],
          responses: { "200": done("{ok, triggers}"), ...common },
        },
      },
      [`${base}/triggers/{id}`]: {
        get: {
          summary: "One trigger",
          parameters: [idPath, businessQuery],
          responses: { "200": done("{ok, trigger}"), ...found, ...common },
        },
        patch: {
          summary: "Change a trigger",
          parameters: [idPath, businessQuery],
          requestBody: { required: true, content: json("UpdateTriggerBody") },
          responses: { "200": done("{ok, trigger}"), ...found, ...common },
        },
        delete: {
          summary: "Delete a trigger with its messages",
          parameters: [idPath, businessQuery],
          responses: { "200": done("{ok}"), ...found, ...common },
        },
      },
      [`${base}/deliveries`]: {
        get: {
          summary: "The delivery log, newest first",
          parameters: [
            businessQuery,
            {
              name: "status",
              in: "query",
              required: false,
              schema: { enum: ["pending", "succeeded", "failed", "all"] },
            },
            { name: "endpoint_id", in: "query", required: false, schema: { type: "string", format: "uuid" } },
            { name: "trigger_id", in: "query", required: false, schema: { type: "string", format: "uuid" } },
            { name: "message_id", in: "query", required: false, schema: { type: "string", format: "uuid" } },
            {
              name: "limit",
              in: "query",
              required: false,
              schema: { type: "integer", minimum: 1, maximum: 500 },
            },
          ],
          responses: { "200": done("{ok, deliveries}"), ...common },
        },
      },
      [`${base}/deliveries/{id}`]: {
        get: {
          summary: "One delivery with every attempt (status code, duration, outcome, next attempt)",
          parameters: [idPath, businessQuery],
          responses: { "200": done("{ok, delivery}"), ...found, ...common },
        },
      },
      [`${base}/deliveries/{id}/replay`]: {
        post: {
          summary: "Deliver a finished delivery again now, same webhook-id, fresh schedule",
          parameters: [idPath, businessQuery],
          responses: {
            "200": done("{ok, delivery}"),
            ...found,
            "409": error("delivery_pending or endpoint_disabled"),
            ...common,
          },
        },
      },
    },
  };
}
