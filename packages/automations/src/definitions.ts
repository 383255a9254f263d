import { HttpError } from "@crm/errors";
import { checkDefinition, type SegmentDefinition } from "@crm/segment-definitions";
import { jsonIssues, textProblem } from "@crm/storable";
import { z } from "zod";

/** What a trigger reacts to. */
export const TRIGGER_KINDS = [
  "contact.created",
  "contact.changed",
  "contact.merged",
  "segment.entered",
  "segment.exited",
  "event",
] as const;
export type TriggerKind = (typeof TRIGGER_KINDS)[number];

/** The webhook event types (`type` of a payload, and what an endpoint's filter names): one per trigger kind. */
export const EVENT_TYPES = [
  "contact.created",
  "contact.changed",
  "contact.merged",
  "segment.entered",
  "segment.exited",
  "event.occurred",
] as const;
export type WebhookEventType = (typeof EVENT_TYPES)[number];
export const eventTypeOf = (kind: TriggerKind): WebhookEventType =>
  kind === "event" ? "event.occurred" : kind;

export const MAX_NAME_LENGTH = 200;
/** 30 days: a longer delay is a scheduled campaign, not a trigger. */
export const MAX_DELAY_SECONDS = 30 * 24 * 3600;
export const MAX_URL_LENGTH = 2048;

/** The segment rule's property filter (`where` of an event condition), reused for event triggers. */
export interface PropertyFilter {
  property: string;
  op: string;
  value?: unknown;
}

/** A trigger's `on`, as stored in `kind` + `params`. */
export type TriggerOn =
  | { kind: "contact.created" }
  | { kind: "contact.changed"; field: string; to?: string | number | boolean }
  | { kind: "contact.merged" }
  | { kind: "segment.entered" | "segment.exited"; segment_id: string }
  | { kind: "event"; type: string; where?: PropertyFilter[] };

const Name = z.string().max(MAX_NAME_LENGTH * 4);
const BusinessId = z.uuid().optional();
const SegmentId = z
  .string()
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, "must be a uuid");

export const TriggerOnInput = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("contact.created") }),
  z.strictObject({
    kind: z.literal("contact.changed"),
    field: z.string().max(262),
    to: z.unknown().optional(),
  }),
  z.strictObject({ kind: z.literal("contact.merged") }),
  z.strictObject({ kind: z.literal("segment.entered"), segment_id: SegmentId }),
  z.strictObject({ kind: z.literal("segment.exited"), segment_id: SegmentId }),
  z.strictObject({ kind: z.literal("event"), type: z.string().max(512), where: z.unknown().optional() }),
]);

const TriggerOptions = {
  contact_filter: z.unknown().optional(),
  once_per_contact: z.boolean().optional(),
  delay_seconds: z.number().int().min(0).max(MAX_DELAY_SECONDS).optional(),
  enabled: z.boolean().optional(),
};

export const CreateTriggerBody = z.strictObject({
  business_id: BusinessId,
  name: Name,
  on: TriggerOnInput,
  ...TriggerOptions,
});
export type CreateTriggerBody = z.infer<typeof CreateTriggerBody>;

export const UpdateTriggerBody = z
  .strictObject({
    business_id: BusinessId,
    name: Name.optional(),
    on: TriggerOnInput.optional(),
    ...TriggerOptions,
  })
  .refine((b) => Object.keys(b).some((k) => k !== "business_id"), { message: "nothing to change" });
export type UpdateTriggerBody = z.infer<typeof UpdateTriggerBody>;

const EventTypes = z.array(z.enum(EVENT_TYPES)).min(1).max(EVENT_TYPES.length).nullable();

export const CreateEndpointBody = z.strictObject({
  business_id: BusinessId,
  url: z.string().max(MAX_URL_LENGTH * 2),
  description: z.string().max(2000).optional(),
  event_types: EventTypes.optional(),
  enabled: z.boolean().optional(),
});
export type CreateEndpointBody = z.infer<typeof CreateEndpointBody>;

export const UpdateEndpointBody = z
  .strictObject({
    business_id: BusinessId,
    url: z
      .string()
      .max(MAX_URL_LENGTH * 2)
      .optional(),
    description: z.string().max(2000).optional(),
    event_types: EventTypes.optional(),
    enabled: z.boolean().optional(),
  })
  .refine((b) => Object.keys(b).some((k) => k !== "business_id"), { message: "nothing to change" });
export type UpdateEndpointBody = z.infer<typeof UpdateEndpointBody>;

/** Rotation: the old secret keeps signing (both signatures sent) for this long; default 24 h, at most 7 days. */
export const RotateSecretBody = z.strictObject({
  business_id: BusinessId,
  overlap_seconds: z
    .number()
    .int()
    .min(0)
    .max(7 * 24 * 3600)
    .optional(),
});

export const DeliveryStatus = z.enum(["pending", "succeeded", "failed", "all"]);

type Issue = { path: string[]; message: string };

export const invalidRequest = (issues: Issue[]) =>
  new HttpError(
    400,
    "invalid_request",
    issues
      .slice(0, 20)
      .map((i) => `${i.path.join(".") || "body"}: ${i.message}`)
      .join("; "),
    { issues: issues.slice(0, 20) },
  );

/** A name: 1..200 characters after trim, storable, no control characters. */
export function namedProblem(name: string): string | undefined {
  const trimmed = name.trim();
  if (trimmed.length === 0 || trimmed.length > MAX_NAME_LENGTH)
    return `must be 1..${MAX_NAME_LENGTH} characters`;
  return textProblem(trimmed);
}

/**
 * Checks a trigger's `on` and contact filter with the segment rule language's own validator (so a `where` or a
 * contact condition means here what it means in a segment) and returns them normalized. Throws a 400 naming fields.
 */
export function checkTrigger(input: {
  name?: string;
  on?: z.infer<typeof TriggerOnInput>;
  contact_filter?: unknown;
}): { on?: TriggerOn; contactFilter?: SegmentDefinition | null } {
  const issues: Issue[] = [];
  if (input.name !== undefined) {
    const problem = namedProblem(input.name);
    if (problem) issues.push({ path: ["name"], message: problem });
  }
  let on: TriggerOn | undefined;
  if (input.on) {
    const raw = input.on;
    switch (raw.kind) {
      case "contact.changed": {
        const test: Record<string, unknown> = { field: raw.field, op: raw.to === undefined ? "exists" : "=" };
        if (raw.to !== undefined) test.value = raw.to;
        issues.push(...wrapped({ contact: test }, ["contact"], ["on"], { field: "field", value: "to" }));
        on = raw.to === undefined ? { kind: raw.kind, field: raw.field } : { ...raw, to: raw.to as string };
        break;
      }
      case "event": {
        const typeProblem =
          raw.type.trim().length === 0 || raw.type.trim().length > 128
            ? "must be 1..128 characters"
            : textProblem(raw.type);
        if (typeProblem) issues.push({ path: ["on", "type"], message: typeProblem });
        const where = raw.where ?? [];
        issues.push(...wrapped({ no_event: { type: "x", where, last_days: 1 } }, ["no_event"], ["on"], {}));
        on =
          raw.where === undefined
            ? { kind: "event", type: raw.type.trim() }
            : { kind: "event", type: raw.type.trim(), where: raw.where as PropertyFilter[] };
        break;
      }
      case "segment.entered":
      case "segment.exited":
        on = { kind: raw.kind, segment_id: raw.segment_id.toLowerCase() };
        break;
      default:
        on = { kind: raw.kind };
    }
  }
  let contactFilter: SegmentDefinition | null | undefined;
  if (input.contact_filter === null) contactFilter = null;
  else if (input.contact_filter !== undefined) {
    const filter = input.contact_filter;
    const checked = checkDefinition(filter, ["contact_filter"]);
    if (!checked.ok) issues.push(...checked.issues);
    else {
      issues.push(...onlyContactConditions(filter));
      contactFilter = checked.definition;
    }
  }
  if (issues.length > 0) throw invalidRequest(issues);
  return { on, contactFilter };
}

/** A part of a trigger checked as a piece of segment rule; issue paths mapped back to the trigger's fields. */
function wrapped(
  rule: unknown,
  wrapper: string[],
  prefix: string[],
  rename: Record<string, string>,
): Issue[] {
  const storable = jsonIssues(rule, { maxDepth: 8 });
  const checked = storable.length > 0 ? { ok: false as const, issues: storable } : checkDefinition(rule);
  if (checked.ok) return [];
  return checked.issues.map((issue) => {
    const inner = issue.path.slice(wrapper.length).map((part) => rename[part] ?? part);
    return { path: [...prefix, ...inner], message: issue.message };
  });
}

/** A contact filter may test the contact only: no events, no segments (evaluated when the trigger fires). */
function onlyContactConditions(filter: unknown): Issue[] {
  const issues: Issue[] = [];
  const stack: { node: unknown; path: string[] }[] = [{ node: filter, path: ["contact_filter"] }];
  while (stack.length > 0) {
    const { node, path } = stack.pop()!;
    const [kind, body] = Object.entries(node as Record<string, unknown>)[0]!;
    if (kind === "all" || kind === "any") {
      (body as unknown[]).forEach((child, i) => {
        stack.push({ node: child, path: [...path, kind, String(i)] });
      });
    } else if (kind === "not") stack.push({ node: body, path: [...path, "not"] });
    else if (kind !== "contact") {
      issues.push({
        path: [...path, kind],
        message: "a contact filter takes contact conditions (and all/any/not) only",
      });
    }
  }
  return issues;
}

/** An endpoint URL: http(s), a host, no credentials, at most 2048 characters. Private hosts are refused at delivery. */
export function urlProblem(text: string): string | undefined {
  if (text.length > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  const problem = textProblem(text);
  if (problem) return problem;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "must be an absolute URL";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "must be http or https";
  if (!url.hostname) return "must name a host";
  if (url.username || url.password) return "must not carry credentials";
  return undefined;
}
