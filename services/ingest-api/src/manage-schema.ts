import { DOCUMENT_SCHEMAS } from "@crm/schemas";
import { MAX_NAME_LENGTH } from "@crm/segment-definitions";
import { z } from "zod";

// Request bodies of the management API (issue 16.1). The envelope is zod, as for /v1/track; `definition` is
// checked by @crm/segment-definitions against schemas/segment-definition.v1.json (after its iterative storable walk:
// a recursive validator must never see a deep value), so here it is any value, and the
// OpenAPI document refers to that same JSON Schema.

/** A management request's body: a definition is at most 16 KiB, the rest is small. */
export const MAX_MANAGE_BODY_BYTES = 64 * 1024;

const Name = z.string().max(MAX_NAME_LENGTH * 4);
const BusinessId = z.uuid().optional();
const ExpectedVersion = z.number().int().min(1).max(2_147_483_647).optional();

export const CreateSegmentBody = z.strictObject({
  business_id: BusinessId,
  name: Name,
  definition: z.unknown(),
});

export const UpdateSegmentBody = z
  .strictObject({
    business_id: BusinessId,
    name: Name.optional(),
    definition: z.unknown().optional(),
    expected_version: ExpectedVersion,
  })
  .refine((body) => body.name !== undefined || body.definition !== undefined, {
    message: "name or definition is required",
  });

export const ArchiveSegmentBody = z.strictObject({
  business_id: BusinessId,
  expected_version: ExpectedVersion,
});

export const ListStatus = z.enum(["active", "archived", "all"]);

const jsonSchema = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { io: "input", target: "draft-2020-12", unrepresentable: "any" });

/** The rule's JSON Schema as an OpenAPI component: its own `#/definitions/...` refs rewritten to the component. */
function definitionComponent(): object {
  const { $schema: _, $id: __, ...schema } = DOCUMENT_SCHEMAS["segment-definition.v1"];
  return JSON.parse(
    JSON.stringify(schema).replaceAll(
      '"#/definitions/',
      '"#/components/schemas/SegmentDefinition/definitions/',
    ),
  );
}

const withDefinition = (schema: z.ZodType) => {
  const json = jsonSchema(schema) as { properties: Record<string, unknown> };
  json.properties.definition = { $ref: "#/components/schemas/SegmentDefinition" };
  return json;
};

/** Components and paths of `/v1/manage/segments`, merged into the OpenAPI document of app.ts. */
export function manageOpenApi(error: (description: string) => object) {
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
    "403": error("forbidden_business, or user_token_required for an ingest key"),
    "413": error("payload_too_large"),
  };
  const one = { description: "the segment", content: json("SegmentResponse") };
  return {
    schemas: {
      SegmentDefinition: definitionComponent(),
      CreateSegmentBody: withDefinition(CreateSegmentBody),
      UpdateSegmentBody: withDefinition(UpdateSegmentBody),
      ArchiveSegmentBody: jsonSchema(ArchiveSegmentBody),
      Segment: {
        type: "object",
        required: ["id", "business_id", "name", "version", "definition", "status", "member_count"],
        properties: {
          id: { type: "string", format: "uuid" },
          business_id: { type: "string", format: "uuid" },
          name: { type: "string" },
          version: { type: "integer", minimum: 1 },
          definition: { $ref: "#/components/schemas/SegmentDefinition" },
          status: { enum: ["active", "archived"] },
          created_at: { type: "string", format: "date-time" },
          updated_at: { type: "string", format: "date-time" },
          member_count: {
            type: "integer",
            description: "Contacts in the segment now (computed by the segments service)",
          },
        },
      },
      SegmentResponse: {
        type: "object",
        properties: { ok: { const: true }, segment: { $ref: "#/components/schemas/Segment" } },
      },
    },
    paths: {
      "/v1/manage/segments": {
        post: {
          summary: "Create a segment (version 1)",
          requestBody: { required: true, content: json("CreateSegmentBody") },
          responses: { "201": one, ...common },
        },
        get: {
          summary: "List the business's segments",
          parameters: [
            businessQuery,
            { name: "status", in: "query", required: false, schema: jsonSchema(ListStatus) },
          ],
          responses: {
            "200": {
              description: "segments, oldest first",
              content: {
                "application/json": {
                  schema: {
                    type: "object",
                    properties: {
                      ok: { const: true },
                      segments: { type: "array", items: { $ref: "#/components/schemas/Segment" } },
                    },
                  },
                },
              },
            },
            ...common,
          },
        },
      },
      "/v1/manage/segments/{id}": {
        get: {
          summary: "One segment",
          parameters: [idPath, businessQuery],
          responses: { "200": one, "404": error("not_found"), ...common },
        },
        patch: {
          summary: "Change name and/or rule: a new version",
          parameters: [idPath, businessQuery],
          requestBody: { required: true, content: json("UpdateSegmentBody") },
          responses: {
            "200": one,
            "404": error("not_found"),
            "409": error("version_conflict (expected_version) or segment_archived"),
            ...common,
          },
        },
      },
      "/v1/manage/segments/{id}/archive": {
        post: {
          summary: "Archive a segment: a new version with status archived",
          parameters: [idPath, businessQuery],
          requestBody: { required: false, content: json("ArchiveSegmentBody") },
          responses: {
            "200": one,
            "404": error("not_found"),
            "409": error("version_conflict, or segment_in_use (an active segment names it)"),
            ...common,
          },
        },
      },
      "/v1/manage/segments/{id}/versions": {
        get: {
          summary: "Every version of a segment, oldest first",
          parameters: [idPath, businessQuery],
          responses: { "200": { description: "the history" }, "404": error("not_found"), ...common },
        },
      },
    },
  };
}
