import { envInt } from "@crm/config";
import { TOPICS } from "@crm/kafka";
import { z } from "zod";

const flag = z
  .enum(["0", "1", "true", "false"])
  .default("0")
  .transform((v) => v === "1" || v === "true");

/** Svix's schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. */
export const SVIX_SCHEDULE_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

export const AutomationsEnv = z.object({
  // services' role (no BYPASSRLS); the service refuses to start with anything stronger
  DATABASE_URL: z.string().url(),
  // comma-separated host:port list
  KAFKA_BROKERS: z.string().min(1),
  // this service's SCRAM principal (stack up writes it): reads contact.updated.v1, segment.membership.v1 and
  // events.applied.v1, groups prefixed "automations". Unset: no SASL
  KAFKA_AUTOMATIONS_USERNAME: z.string().min(1).optional(),
  KAFKA_AUTOMATIONS_PASSWORD: z.string().min(1).optional(),
  // the 32-byte key (base64url) that sealed the endpoints' secrets; the management API seals with the same one
  AUTOMATIONS_SECRET_KEY: z.string().min(1),
  // health and metrics port (default 8095, SPEC 11)
  AUTOMATIONS_PORT: envInt.default(8095),
  AUTOMATIONS_HOST: z.string().default("127.0.0.1"),
  // consumer group; instances sharing it split the partitions
  AUTOMATIONS_GROUP_ID: z.string().min(1).default("automations"),
  // inputs; tests point an instance at their own topics. Empty: that input is not consumed
  AUTOMATIONS_CONTACT_TOPIC: z.string().default(TOPICS.contactUpdated),
  AUTOMATIONS_MEMBERSHIP_TOPIC: z.string().default(TOPICS.segmentMembership),
  AUTOMATIONS_EVENTS_TOPIC: z.string().default(TOPICS.eventsApplied),
  // a new group starts at the topics' end (only changes from now on trigger), not at their beginning
  AUTOMATIONS_FROM_BEGINNING: flag,
  // DEVELOPMENT ONLY: deliver to loopback, private and link-local addresses too. Off, such targets are refused
  // (SSRF: a tenant's URL must never reach the service's own network)
  AUTOMATIONS_ALLOW_PRIVATE_TARGETS: flag,
  // how long one attempt may take, connect to last byte (ms)
  AUTOMATIONS_TIMEOUT_MS: envInt.positive().default(15_000),
  // delays after failed attempts, comma-separated ms; default Svix's. Tests shrink it
  AUTOMATIONS_RETRY_SCHEDULE_MS: z
    .string()
    .default(SVIX_SCHEDULE_MS.join(","))
    .transform((text) => text.split(",").map((part) => Number(part.trim())))
    .refine(
      (list) => list.length > 0 && list.every((n) => Number.isInteger(n) && n >= 0),
      "comma-separated ms",
    ),
  // +- this fraction of each retry delay is random, so retries of many messages do not arrive together
  AUTOMATIONS_RETRY_JITTER: z.coerce.number().min(0).max(1).default(0.1),
  // an endpoint whose attempts have failed for this long (ms, no success in between) is disabled; default 5 days
  AUTOMATIONS_DISABLE_AFTER_MS: envInt.positive().default(5 * 24 * 3600 * 1000),
  // attempts in flight to one endpoint at once: a slow endpoint holds at most these, never the others' turn
  AUTOMATIONS_ENDPOINT_CONCURRENCY: envInt.positive().default(16),
  // attempts in flight in this instance
  AUTOMATIONS_MAX_IN_FLIGHT: envInt.positive().default(256),
  // how often the delivery loop looks for due deliveries when it found none (ms)
  AUTOMATIONS_POLL_MS: envInt.positive().default(200),
  // bytes of an answer read (the rest is dropped) and kept in the attempt log (first 256 characters)
  AUTOMATIONS_MAX_RESPONSE_BYTES: envInt.positive().default(4_096),
  // a member that stopped heartbeating (crashed) keeps its partitions this long (ms); Kafka's minimum is 6000
  AUTOMATIONS_SESSION_TIMEOUT_MS: envInt.default(30_000),
  DATABASE_POOL_SIZE: envInt.default(8),
});
export type AutomationsEnv = z.infer<typeof AutomationsEnv>;
