import { createHmac } from "node:crypto";
import { type Logger, pino } from "pino";

export type { Logger } from "pino";

/**
 * Paths that could carry PII or secrets if someone logs a request or an event by mistake (SPEC 9.6). The logger
 * censors them wherever they appear; code still must not log them on purpose.
 */
const REDACT = [
  "email",
  "phone",
  "token",
  "authorization",
  "idempotencyKey",
  "idempotency_key",
  "idemKey",
  "*.email",
  "*.phone",
  "*.token",
  "*.authorization",
  "*.idempotencyKey",
  "*.idempotency_key",
  "*.idemKey",
  "req.headers.authorization",
  'req.headers["idempotency-key"]',
  "contact.email",
  "contact.phone",
];

/** A structured JSON logger (pino) named after the service. LOG_LEVEL overrides the level. */
export function createLogger(
  service: string,
  options: { level?: string; destination?: pino.DestinationStream } = {},
): Logger {
  return pino(
    {
      name: service,
      level: options.level ?? process.env.LOG_LEVEL ?? "info",
      redact: { paths: REDACT, censor: "[redacted]" },
      base: { service },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination,
  );
}

/** A keyed hash of an identifier (user id, key id) so logs can correlate without revealing it (SPEC 9.6). */
export function hashId(secret: string, id: string): string {
  return createHmac("sha256", secret).update(id).digest("hex").slice(0, 16);
}
