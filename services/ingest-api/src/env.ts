import { envInt } from "@crm/config";
import { z } from "zod";

export const IngestEnv = z.object({
  // services' role (no BYPASSRLS); only definer lookups are used before a tenant is known
  DATABASE_URL: z.string().url(),
  // comma-separated host:port list
  KAFKA_BROKERS: z.string().min(1),
  // HS256 secret of user tokens; a leak lets anyone write as any user
  JWT_SECRET: z.string().min(16),
  // expected `aud` of user tokens (Supabase issues "authenticated")
  JWT_AUDIENCE: z.string().default("authenticated"),
  // expected `iss`, checked only when set
  JWT_ISSUER: z.string().optional(),
  // key of the HMAC that hashes user ids in logs (SPEC 9.6)
  LOG_HASH_SECRET: z.string().min(16),
  // listen port (default 8080), on 127.0.0.1 unless INGEST_HOST says otherwise
  INGEST_PORT: envInt.default(8080),
  INGEST_HOST: z.string().default("127.0.0.1"),
  // how long a send may wait for Kafka's acknowledgement before the API answers 503
  KAFKA_SEND_TIMEOUT_MS: envInt.default(5_000),
});
export type IngestEnv = z.infer<typeof IngestEnv>;
