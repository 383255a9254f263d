import { z } from "zod";

export const MAX_PROPS_BYTES = 32 * 1024;
export const MAX_TRACK_BODY_BYTES = 64 * 1024;
const MAX_FUTURE_MS = 24 * 60 * 60 * 1000;

/** The body of `POST /v1/track` (SPEC 4). Email and phone syntax is checked later, with the business's country. */
export const TrackBody = z.object({
  type: z
    .string({ error: "type must be a string" })
    .trim()
    .min(1, "type must not be empty")
    .max(128, "type must be at most 128 characters"),
  business_id: z.uuid({ error: "business_id must be a uuid" }).optional(),
  contact: z
    .object({
      external_id: z.string().max(1024).optional(),
      email: z.string().max(1024).optional(),
      phone: z.string().max(64).optional(),
      name: z.string().trim().max(255).optional(),
    })
    .strict()
    .optional(),
  props: z
    .record(z.string(), z.unknown(), { error: "props must be a JSON object" })
    .refine((props) => Buffer.byteLength(JSON.stringify(props)) <= MAX_PROPS_BYTES, {
      message: `props must be at most ${MAX_PROPS_BYTES} bytes`,
    })
    .optional(),
  occurred_at: z.iso
    .datetime({ offset: true, error: "occurred_at must be an ISO 8601 date-time" })
    .refine((at) => Date.parse(at) <= Date.now() + MAX_FUTURE_MS, {
      message: "occurred_at must not be more than 24 h in the future",
    })
    .optional(),
});
export type TrackBody = z.infer<typeof TrackBody>;
