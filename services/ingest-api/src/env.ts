import { envInt } from "@crm/config";
import { z } from "zod";

const csv = z.string().transform((value) =>
  value
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean),
);

export const IngestEnv = z
  .object({
    // services' role (no BYPASSRLS); only definer lookups are used before a tenant is known
    DATABASE_URL: z.string().url(),
    // comma-separated host:port list
    KAFKA_BROKERS: z.string().min(1),
    // this service's SCRAM principal (written by `stack up`); it may only write events.raw.v1. Unset: no SASL
    KAFKA_INGEST_API_USERNAME: z.string().min(1).optional(),
    KAFKA_INGEST_API_PASSWORD: z.string().min(1).optional(),
    // Confluent-compatible registry (Apicurio ccompat); values are framed with the events.raw.v1 schema id. Unset:
    // plain JSON values
    SCHEMA_REGISTRY_URL: z.string().url().optional(),
    // "production" requires JWT_ISSUER (a token of another issuer sharing the secret or JWKS must not pass)
    NODE_ENV: z.string().default("development"),
    // HS256 secret of user tokens, at least 32 bytes (RFC 7518 3.2: no shorter than the hash); a leak lets anyone
    // write as any user
    // seals webhook secrets of the automations management API (32 bytes base64url, `stack up` writes it); unset:
    // creating or rotating an endpoint answers 503
    AUTOMATIONS_SECRET_KEY: z.string().min(1).optional(),
    JWT_SECRET: z.string().refine((secret) => Buffer.byteLength(secret) >= 32, "must be at least 32 bytes"),
    // JWKS of RS256/ES256 user tokens (e.g. Supabase's /auth/v1/.well-known/jwks.json); unset: HS256 only
    JWKS_URL: z.string().url().optional(),
    // accepted token algorithms; `none` and anything else are refused
    JWT_ALGORITHMS: csv
      .pipe(z.array(z.enum(["HS256", "RS256", "ES256"])).min(1))
      .default(["HS256", "RS256", "ES256"]),
    // expected `aud` of user tokens (Supabase issues "authenticated")
    JWT_AUDIENCE: z.string().default("authenticated"),
    // expected `iss`, checked when set; required when NODE_ENV=production
    JWT_ISSUER: z.string().optional(),
    // longest accepted token lifetime (exp - iat) in seconds; Supabase issues 1 h tokens
    JWT_MAX_LIFETIME_S: envInt.pipe(z.number().min(1)).default(24 * 60 * 60),
    // clock difference tolerated on exp and on an iat in the future, in seconds
    JWT_CLOCK_SKEW_S: envInt.pipe(z.number().min(0)).default(60),
    // key of the HMAC that hashes user ids in logs (SPEC 9.6)
    LOG_HASH_SECRET: z.string().min(16),
    // key of the suppression list's hashes (issue 18), the resolver-worker's value; unset: the erasure routes of the
    // management API answer 503 (nothing can be suppressed without it)
    ERASURE_HASH_SECRET: z.string().min(16).optional(),
    // listen port (default 8080), on 127.0.0.1 unless INGEST_HOST says otherwise
    INGEST_PORT: envInt.default(8080),
    INGEST_HOST: z.string().default("127.0.0.1"),
    // port of the Segment-compatible listener (issue 15), on INGEST_HOST; 0 turns it off
    SEGMENT_PORT: envInt.pipe(z.number().min(0)).default(8082),
    // messages the Segment listener refused one by one are kept this long (the database keeps at least a day)
    REJECTED_EVENTS_RETENTION_DAYS: envInt.pipe(z.number().min(1)).default(14),
    // how long a send may wait for Kafka's acknowledgement before the API answers 503
    KAFKA_SEND_TIMEOUT_MS: envInt.default(5_000),
    // a send that finds the producer idle waits this long (ms) for other requests' events to share its Kafka
    // request; 0 = at once. Bench scenario 1, same stack, minutes apart, 0 -> 2: CPU per event at 1,000 req/s
    // 782 -> 598 µs (API 477 -> 395, Kafka 254 -> 152), maximum 6,018 -> 8,927 events/s, p50/p99 at 1,000 req/s
    // 1.7/7.7 -> 3.1/8.8 ms (1 ms: 7,723 events/s, 690 µs)
    KAFKA_LINGER_MS: envInt.pipe(z.number().min(0)).default(2),
    // the topic raw events are produced to (default events.raw.v1); the bench gives its own, as WORKER_TOPIC
    INGEST_TOPIC: z.string().min(1).default("events.raw.v1"),
    // events per second per user (seed figure)
    RATE_LIMIT_USER_PER_SEC: envInt.default(20),
    // events per second per ingest key, by business plan, as JSON ({"standard":5000}); unknown plans get the default
    RATE_LIMIT_PLANS: z
      .string()
      .default("{}")
      .transform((text) => z.record(z.string(), z.number().int().positive()).parse(JSON.parse(text))),
    RATE_LIMIT_KEY_DEFAULT_PER_SEC: envInt.default(5_000),
    // failed authentications per second allowed from one client address (and burst), checked before
    // authentication: 429 past it, except for credentials that authenticated in the last 10 min. Only failures
    // count, so a busy producer with a good key never spends any; 0 turns the check off
    RATE_LIMIT_ADDRESS_AUTH_FAILURES_PER_SEC: envInt.pipe(z.number().min(0)).default(10),
    RATE_LIMIT_ADDRESS_AUTH_FAILURE_BURST: envInt.pipe(z.number().min(1)).default(100),
    // proxies in front of the API that append to X-Forwarded-For; the client address is the entry the farthest of
    // them saw. 0 (default): the socket's peer. Set it only behind such proxies, or clients choose their address
    INGEST_TRUSTED_PROXY_HOPS: envInt.pipe(z.number().min(0)).default(0),
    // how long an ingest key found unknown is answered 401 without a lookup (a key created meanwhile works after
    // at most this long)
    INGEST_KEY_UNKNOWN_CACHE_MS: envInt.pipe(z.number().min(0)).default(5_000),
    // complete request headers must arrive within this (Node's default is 60 s)
    INGEST_HEADERS_TIMEOUT_MS: envInt.pipe(z.number().min(1)).default(10_000),
    // the body must arrive within this after the headers: 408 request_timeout and the connection closed
    INGEST_BODY_TIMEOUT_MS: envInt.pipe(z.number().min(1)).default(10_000),
    // backstop for a whole request, headers and body (Node's default is 300 s): 408 if nothing was answered yet,
    // else the socket is closed. Must exceed headers + body timeouts so those answer first
    INGEST_REQUEST_TIMEOUT_MS: envInt.pipe(z.number().min(1)).default(30_000),
    // an idle keep-alive connection is closed after this; above the 60 s idle timeout of common balancers, so the
    // balancer closes first and never reuses a connection the API just closed (a 502)
    INGEST_KEEP_ALIVE_TIMEOUT_MS: envInt.pipe(z.number().min(1)).default(65_000),
    // open connections at most (idle keep-alive ones included); further ones are closed at once. Keep it below
    // the process's file limit (ulimit -n)
    INGEST_MAX_CONNECTIONS: envInt.pipe(z.number().min(1)).default(2_048),
    // instances of one deployment share each caller's rate limit (each enforces 1/N); give canaries their own
    INGEST_INSTANCE_GROUP: z.string().min(1).default("default"),
    // idempotency records are kept this long (never less than 24 h: the database refuses to prune younger ones)
    IDEMPOTENCY_RETENTION_HOURS: envInt.default(24),
    // how long shutdown waits for in-flight requests before exiting anyway
    SHUTDOWN_GRACE_MS: envInt.default(15_000),
  })
  .refine((env) => env.NODE_ENV !== "production" || env.JWT_ISSUER !== undefined, {
    path: ["JWT_ISSUER"],
    message: "is required when NODE_ENV=production",
  })
  .refine(
    (env) => env.INGEST_REQUEST_TIMEOUT_MS > env.INGEST_HEADERS_TIMEOUT_MS + env.INGEST_BODY_TIMEOUT_MS,
    {
      path: ["INGEST_REQUEST_TIMEOUT_MS"],
      message: "must exceed INGEST_HEADERS_TIMEOUT_MS + INGEST_BODY_TIMEOUT_MS",
    },
  );
export type IngestEnv = z.infer<typeof IngestEnv>;
