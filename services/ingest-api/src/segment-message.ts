import { normalizeEmail, normalizePhone } from "@crm/identity";
import { textProblem } from "@crm/storable";

// Segment's messages (https://segment.com/docs/connections/spec/) as track bodies of SPEC 4, so they go through the
// one accept path (parseEventOr400, Ingest.prepare, Ingest.accept) like any /v1/track body.

/** Segment's limit of one message, as compact JSON (also the limit of a single call's body). */
export const MAX_MESSAGE_BYTES = 32 * 1024;
/** Segment's limits of a batch (`/v1/batch`, `/v1/import`). */
export const MAX_SEGMENT_BATCH_BYTES = 500 * 1024;
export const MAX_SEGMENT_BATCH_MESSAGES = 2_500;
/** Containers a message may nest (props themselves are held to @crm/storable's 32 after mapping). */
const MAX_MESSAGE_DEPTH = 40;

export const SEGMENT_TYPES = ["track", "identify", "page", "screen", "group", "alias"] as const;
export type SegmentType = (typeof SEGMENT_TYPES)[number];

/** Why a message was refused on its own (a metrics label, so a closed set). */
export type RejectionCode =
  | "invalid_message"
  | "invalid_contact"
  | "invalid_traits"
  | "too_large"
  | "forbidden_business"
  | "duplicate_other_body";

export interface Rejection {
  ok: false;
  code: RejectionCode;
  /** Field paths in Segment's names and what is wrong, never the values. */
  reason: string;
}

/** A message as a track body, with what its idempotency key and body hash are made of. */
export interface MappedMessage {
  ok: true;
  /** A /v1/track body: type, business_id, contact, props, occurred_at. */
  body: {
    type: string;
    business_id: unknown;
    contact: Record<string, unknown>;
    props: Record<string, unknown>;
    occurred_at: string;
  };
  /**
   * What a retry of the same message repeats: the body without occurred_at, which depends on the time of receipt
   * when only originalTimestamp is sent, and with the message's own timestamps instead.
   */
  hashed: unknown;
}

export interface MessageContext {
  /** The type a single call's path gives (`/v1/track`); a batch item says its own. */
  pathType: SegmentType | undefined;
  /** The write key's business, the default of `business_id`. */
  businessId: string;
  /** The business's default country, for a phone number in traits. */
  country: string;
  receivedAt: number;
  /** The batch's sentAt (analytics-node sends it on the batch, RudderStack on both). */
  batchSentAt: unknown;
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json =>
  value !== null && typeof value === "object" && !Array.isArray(value);

const reject = (code: RejectionCode, reason: string): Rejection => ({ ok: false, code, reason });

/** The messageId of a message, as a string (numbers are coerced, as the SDKs do for ids); undefined if none. */
export function messageIdOf(message: unknown): string | undefined {
  if (!isObject(message)) return undefined;
  const id = message.messageId;
  if (typeof id === "string" && id.length > 0) return id;
  if (typeof id === "number" && Number.isFinite(id)) return String(id);
  return undefined;
}

/**
 * Why a message is too deep or too large, or undefined. The depth is walked iteratively and first, so that
 * JSON.stringify (recursive) only ever sees a bounded depth.
 */
export function messageSizeProblem(message: unknown): Rejection | undefined {
  const stack: { value: unknown; depth: number }[] = [{ value: message, depth: 1 }];
  while (stack.length > 0) {
    const { value, depth } = stack.pop()!;
    if (value === null || typeof value !== "object") continue;
    if (depth > MAX_MESSAGE_DEPTH) {
      return reject("invalid_message", `message: nested deeper than ${MAX_MESSAGE_DEPTH} levels`);
    }
    for (const child of Object.values(value)) stack.push({ value: child, depth: depth + 1 });
  }
  if (Buffer.byteLength(JSON.stringify(message)) > MAX_MESSAGE_BYTES) {
    return reject("too_large", `message: larger than ${MAX_MESSAGE_BYTES} bytes`);
  }
  return undefined;
}

/** An id as Segment's SDKs coerce it: a string, or a number as its decimal text; anything else is refused. */
function idOf(value: unknown): string | undefined | Rejection {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return reject("invalid_contact", "must be a string");
}

/** Epoch ms of an ISO 8601 (or Date-parsable) string; a rejection for anything else. */
function instant(value: unknown, field: string): number | undefined | Rejection {
  if (value === undefined || value === null) return undefined;
  const ms = typeof value === "string" ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(ms)) return reject("invalid_message", `${field}: is not a valid date-time`);
  return ms;
}

const isRejection = (value: unknown): value is Rejection =>
  isObject(value) && value.ok === false && typeof value.code === "string";

/**
 * When the message happened (Segment's rules): `timestamp`; else `originalTimestamp` corrected for the sender's
 * clock, receivedAt - (sentAt - originalTimestamp), with the message's sentAt or the batch's; else receipt time.
 */
export function occurredAt(message: Json, receivedAt: number, batchSentAt: unknown): number | Rejection {
  const timestamp = instant(message.timestamp, "timestamp");
  if (isRejection(timestamp)) return timestamp;
  if (timestamp !== undefined) return timestamp;
  const original = instant(message.originalTimestamp, "originalTimestamp");
  if (isRejection(original)) return original;
  if (original === undefined) return receivedAt;
  const sentAt = instant(message.sentAt ?? batchSentAt, "sentAt");
  if (isRejection(sentAt)) return sentAt;
  return sentAt === undefined ? original : receivedAt - (sentAt - original);
}

/** An optional JSON object field; a rejection when it is anything else. */
function objectField(message: Json, field: string, code: RejectionCode): Json | undefined | Rejection {
  const value = message[field];
  if (value === undefined || value === null) return undefined;
  if (isObject(value)) return value;
  return reject(code, `${field}: must be a JSON object`);
}

/** A trait usable as a contact field: a string that normalizes (else it stays a trait only). */
function usableText(value: unknown, max: number): string | undefined {
  if (typeof value !== "string") return undefined;
  const text = value.trim();
  return text.length > 0 && text.length <= max && textProblem(text) === undefined ? text : undefined;
}

/** email, phone and name from identify traits (Segment's reserved traits), each only when usable as such. */
function identifiersFromTraits(traits: Json, country: string): Json {
  const out: Json = {};
  const email = usableText(traits.email, 1_024);
  if (email !== undefined && normalizeEmail(email).ok) out.email = email;
  const phone = usableText(traits.phone, 64);
  if (phone !== undefined && normalizePhone(phone, country).ok) out.phone = phone;
  const first = usableText(traits.firstName ?? traits.first_name, 255);
  const last = usableText(traits.lastName ?? traits.last_name, 255);
  const name =
    usableText(traits.name, 255) ?? usableText([first, last].filter(Boolean).join(" "), 255) ?? undefined;
  if (name !== undefined) out.name = name;
  return out;
}

/** The part of Segment's context kept on the event, under props.segment_context: strings only, known keys only. */
function keptContext(message: Json, messageId: string | undefined): Json {
  const context = isObject(message.context) ? message.context : {};
  const kept: Json = {};
  if (messageId !== undefined) kept.message_id = messageId;
  if (typeof context.ip === "string") kept.ip = context.ip;
  if (typeof context.userAgent === "string") kept.user_agent = context.userAgent;
  if (isObject(context.library)) {
    const library: Json = {};
    if (typeof context.library.name === "string") library.name = context.library.name;
    if (typeof context.library.version === "string") library.version = context.library.version;
    kept.library = library;
  }
  return kept;
}

/** The event type a message becomes (track: its `event`). */
const EVENT_TYPES: Record<Exclude<SegmentType, "track">, string> = {
  identify: "identify",
  page: "page_viewed",
  screen: "screen_viewed",
  group: "group",
  alias: "alias",
};

/**
 * A Segment message as a track body (mapping table in the ingest-api README), or why it is refused. Checks only
 * what the mapping needs; everything else (storable text, sizes of props and traits, identifiers, timestamps'
 * range) is the accept path's, on the mapped body.
 */
export function mapSegmentMessage(message: unknown, ctx: MessageContext): MappedMessage | Rejection {
  if (!isObject(message)) return reject("invalid_message", "message: must be a JSON object");
  const tooBig = messageSizeProblem(message);
  if (tooBig) return tooBig;
  const type = ctx.pathType ?? message.type;
  if (typeof type !== "string" || !(SEGMENT_TYPES as readonly string[]).includes(type)) {
    return reject("invalid_message", `type: must be one of ${SEGMENT_TYPES.join(", ")}`);
  }
  const messageId = messageIdOf(message);

  const userId = idOf(message.userId);
  if (isRejection(userId)) return reject(userId.code, `userId: ${userId.reason}`);
  const anonymousId = idOf(message.anonymousId);
  if (isRejection(anonymousId)) return reject(anonymousId.code, `anonymousId: ${anonymousId.reason}`);
  if (userId === undefined && anonymousId === undefined) {
    return reject("invalid_contact", "userId or anonymousId: one of them is required");
  }
  const at = occurredAt(message, ctx.receivedAt, ctx.batchSentAt);
  if (isRejection(at)) return at;
  if (Math.abs(at) > 8.64e15) return reject("invalid_message", "timestamp: is out of range");

  const properties = objectField(message, "properties", "invalid_message");
  if (isRejection(properties)) return properties;
  const traits = objectField(message, "traits", "invalid_traits");
  if (isRejection(traits)) return traits;

  const contact: Json = {};
  if (userId !== undefined) contact.external_id = userId;
  if (anonymousId !== undefined) contact.anonymous_id = anonymousId;
  let eventType: string;
  let props: Json = {};
  switch (type as SegmentType) {
    case "track": {
      if (typeof message.event !== "string" || message.event.trim() === "") {
        return reject("invalid_message", "event: must be a non-empty string");
      }
      eventType = message.event;
      props = { ...properties };
      break;
    }
    case "identify": {
      eventType = EVENT_TYPES.identify;
      // analytics.js keeps identify traits in context.traits; RudderStack sends both.
      const context = isObject(message.context) ? message.context : {};
      const profile = traits ?? (isObject(context.traits) ? context.traits : undefined);
      if (profile) {
        contact.traits = profile;
        Object.assign(contact, identifiersFromTraits(profile, ctx.country));
      }
      break;
    }
    case "page":
    case "screen": {
      eventType = EVENT_TYPES[type as "page" | "screen"];
      props = { ...properties };
      if (typeof message.name === "string") props.name = message.name;
      if (typeof message.category === "string") props.category = message.category;
      break;
    }
    case "group": {
      const groupId = idOf(message.groupId);
      if (isRejection(groupId) || groupId === undefined) {
        return reject("invalid_message", "groupId: must be a non-empty string");
      }
      eventType = EVENT_TYPES.group;
      props = { ...properties, group_id: groupId, ...(traits ? { group_traits: traits } : {}) };
      break;
    }
    case "alias": {
      const previousId = idOf(message.previousId);
      if (isRejection(previousId) || previousId === undefined) {
        return reject("invalid_contact", "previousId: must be a non-empty string");
      }
      if (userId === undefined) return reject("invalid_contact", "userId: alias needs one");
      eventType = EVENT_TYPES.alias;
      contact.previous_id = previousId;
      break;
    }
  }
  props.segment_context = keptContext(message, messageId);
  // business_id (not a Segment field) is honoured as on /v1/track, so naming another business is refused like
  // there; properties.business_id is the customer's data here and never chooses a tenant.
  const body = {
    type: eventType,
    business_id: message.business_id ?? ctx.businessId,
    contact,
    props,
    occurred_at: new Date(at).toISOString(),
  };
  const stamps = [message.timestamp, message.originalTimestamp].map((v) =>
    typeof v === "string" ? v : null,
  );
  const { occurred_at: _derived, ...stable } = body;
  return { ok: true, body, hashed: { ...stable, timestamps: stamps } };
}

// Paths of the mapped body, named as the sender wrote them.
const SEGMENT_NAMES: [RegExp, string][] = [
  [/^contact\.traits/, "traits"],
  [/^contact\.external_id/, "userId"],
  [/^contact\.anonymous_id/, "anonymousId"],
  [/^contact\.previous_id/, "previousId"],
  [/^contact\.email/, "traits.email"],
  [/^contact\.phone/, "traits.phone"],
  [/^contact\.name/, "traits.name"],
  [/^props\.segment_context/, "context"],
  [/^props\.group_traits/, "traits"],
  [/^props/, "properties"],
  [/^occurred_at/, "timestamp"],
  [/^type/, "event"],
];

/** A path of the mapped body in Segment's names (`contact.traits.plan` -> `traits.plan`). */
export function segmentPath(path: string[]): string {
  const joined = path.join(".");
  for (const [pattern, name] of SEGMENT_NAMES) {
    if (pattern.test(joined)) return joined.replace(pattern, name);
  }
  return joined;
}

/** The rejection code of an accept-path refusal of a mapped body, by the first field it names. */
export function rejectionCode(status: number, paths: string[][]): RejectionCode {
  if (status === 403) return "forbidden_business";
  const first = paths[0]?.join(".") ?? "";
  if (first.startsWith("contact.traits") || first.startsWith("props.group_traits")) return "invalid_traits";
  if (first.startsWith("contact")) return "invalid_contact";
  return "invalid_message";
}
