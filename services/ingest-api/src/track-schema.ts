import { MAX_TRAITS_BYTES, MAX_TRAITS_KEYS, timestampProblem, traitsProblem } from "@crm/storable";
import { z } from "zod";

export const MAX_PROPS_BYTES = 32 * 1024;
export const MAX_TRACK_BODY_BYTES = 64 * 1024;
export const MAX_BATCH_BODY_BYTES = 512 * 1024;
export const MAX_BATCH_EVENTS = 500;
const MAX_FUTURE_MS = 24 * 60 * 60 * 1000;

/** The body of `POST /v1/track` (SPEC 4). Email and phone syntax is checked later, with the business's country. */
export const TrackBody = z.object({
  type: z
    .string({ error: "type must be a string" })
    .trim()
    .min(1, "type must not be empty")
    .max(128, "type must be at most 128 characters")
    .meta({ description: "What happened, 1..128 characters after trimming", example: "signup" }),
  business_id: z
    .uuid({ error: "business_id must be a uuid" })
    .optional()
    .meta({ description: "Defaults to props.business_id, then to the caller's only business" }),
  contact: z
    .object({
      external_id: z
        .string()
        .max(1024)
        .optional()
        .meta({ description: "Your id of the person, 1..255 chars" }),
      email: z
        .string()
        .max(1024)
        .optional()
        .meta({ description: "Checked and normalized (NFKC, lowercase)" }),
      phone: z
        .string()
        .max(64)
        .optional()
        .meta({ description: "Parsed with the business's default country, stored as E.164" }),
      name: z.string().trim().max(255).optional(),
      anonymous_id: z.string().max(1024).optional().meta({
        description: "A device or browser id (Segment's anonymousId), 1..255 chars; lowest priority",
      }),
      previous_id: z.string().max(1024).optional().meta({
        description:
          "Alias: the contact known by this anonymous_id (or external_id) is this event's contact; merged into it",
      }),
      traits: z
        .record(
          z
            .string()
            .min(1, "a trait name must not be empty")
            .max(255, "a trait name is at most 255 characters"),
          z.unknown(),
          { error: (issue) => (issue.code === "invalid_type" ? "traits must be a JSON object" : undefined) },
        )
        .check((ctx) => {
          const problem = traitsProblem(ctx.value);
          if (problem) ctx.issues.push({ code: "custom", input: ctx.value, message: `traits ${problem}` });
        })
        .optional()
        .meta({
          description: `Profile traits, latest occurred_at wins per key; at most ${MAX_TRAITS_KEYS} keys and ${MAX_TRAITS_BYTES} bytes`,
        }),
    })
    .strict()
    .optional(),
  props: z
    .record(z.string(), z.unknown(), { error: "props must be a JSON object" })
    .refine((props) => Buffer.byteLength(JSON.stringify(props)) <= MAX_PROPS_BYTES, {
      message: `props must be at most ${MAX_PROPS_BYTES} bytes`,
    })
    .optional()
    .meta({
      description: `Any JSON object of at most ${MAX_PROPS_BYTES} bytes; props.idemKey is an idempotency key`,
    }),
  occurred_at: z.iso
    .datetime({ offset: true, error: "occurred_at must be an ISO 8601 date-time" })
    .check((ctx) => {
      const problem = timestampProblem(ctx.value, MAX_FUTURE_MS);
      if (problem) ctx.issues.push({ code: "custom", input: ctx.value, message: `occurred_at ${problem}` });
    })
    .optional()
    .meta({ description: "Defaults to the time of receipt; from 1900 to at most 24 h in the future" }),
});
export type TrackBody = z.infer<typeof TrackBody>;

/** One item of `POST /v1/batch`: a track body with its own idempotency key. */
export const BatchItem = TrackBody.extend({
  idempotency_key: z
    .string()
    .regex(/^[\x20-\x7e]{1,255}$/, "idempotency_key must be 1..255 printable ASCII characters")
    .optional(),
});
export type BatchItem = z.infer<typeof BatchItem>;

/** The envelope of `POST /v1/batch`; items are validated one by one so a bad one does not sink the rest. */
export const BatchBody = z.object({
  events: z
    .array(z.unknown(), { error: "events must be an array" })
    .min(1, "events must not be empty")
    .meta({ description: `Up to ${MAX_BATCH_EVENTS} track bodies (BatchItem)` }),
});

const ErrorBody = z.object({
  ok: z.literal(false),
  error: z.object({
    code: z.string(),
    message: z.string(),
    issues: z.array(z.object({ path: z.array(z.string()), message: z.string() })).optional(),
  }),
});

const Accepted = z.object({ ok: z.literal(true), event_id: z.uuid(), idempotent: z.boolean().optional() });

const BatchAccepted = z.object({
  ok: z.literal(true),
  results: z.array(z.union([Accepted, ErrorBody])),
});

const jsonSchema = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { io: "input", target: "draft-2020-12", unrepresentable: "any" });

/** The OpenAPI document, generated from the same zod schemas that validate requests. */
export function openApiDocument() {
  const error = (description: string) => ({
    description,
    content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
  });
  const common = {
    "400": error("invalid_request (with issues) or business_required"),
    "401": error("unauthorized"),
    "403": error("forbidden_business"),
    "409": error("idempotency_in_flight (Retry-After)"),
    "413": error("payload_too_large"),
    "422": error("idempotency_mismatch"),
    "429": error("rate_limited (Retry-After, RateLimit headers)"),
    "503": error("unavailable (Retry-After)"),
  };
  const idempotencyHeader = {
    name: "Idempotency-Key",
    in: "header",
    required: false,
    schema: { type: "string", minLength: 1, maxLength: 255 },
  };
  return {
    openapi: "3.1.0",
    info: { title: "CRM ingest API", version: "1.0.0" },
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "user JWT, or an ik_ ingest key" },
      },
      schemas: {
        TrackBody: jsonSchema(TrackBody),
        BatchItem: jsonSchema(BatchItem),
        BatchBody: jsonSchema(BatchBody),
        Accepted: jsonSchema(Accepted),
        BatchAccepted: jsonSchema(BatchAccepted),
        Error: jsonSchema(ErrorBody),
      },
    },
    security: [{ bearer: [] }],
    paths: {
      "/v1/track": {
        post: {
          summary: "Track one event",
          parameters: [idempotencyHeader],
          requestBody: {
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/TrackBody" } } },
          },
          responses: {
            "202": {
              description: "in Kafka",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Accepted" } } },
            },
            "200": {
              description: "idempotent replay: the first event id",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Accepted" } } },
            },
            ...common,
          },
        },
      },
      "/v1/batch": {
        post: {
          summary: `Track up to ${MAX_BATCH_EVENTS} events; a result per item`,
          requestBody: {
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/BatchBody" } } },
          },
          responses: {
            "202": {
              description: "every ok item is in Kafka",
              content: { "application/json": { schema: { $ref: "#/components/schemas/BatchAccepted" } } },
            },
            ...common,
          },
        },
      },
    },
  };
}
