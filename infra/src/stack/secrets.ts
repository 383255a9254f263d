import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { StackSettings } from "./settings.ts";

/**
 * Secrets generated once per stack into `<dir>/secrets.json` (0600, never checked in) and kept across `up`s: a new
 * JWT secret would invalidate issued tokens, a new password would lock out running services. A secret a stack dir
 * made before it existed is generated on its next `up` (the migration sets the roles' passwords again).
 */
export interface StackSecrets {
  jwtSecret: string;
  logHashSecret: string;
  /** Key of the suppression list's HMACs (issue 18): erased identifiers are kept only as hashes under it. */
  erasureHashSecret: string;
  /** AES-256 key (32 bytes, base64url) sealing the automations' webhook secrets at rest. */
  automationsSecretKey: string;
  /** crm_service, the services' role. */
  servicePassword: string;
  /** crm_debezium, the replication role: it reads every tenant. */
  debeziumPassword: string;
  /** crm_console, the ops console's role: reads contacts under RLS, calls the console's lookups. */
  consoleDbPassword: string;
  /** crm_registry, Apicurio's own role and database. */
  registryPassword: string;
  /** The user of Connect's REST API (BasicAuthSecurityRestExtension). */
  connectRestPassword: string;
  /** The ops console's operator sign-in (CONSOLE_OPERATOR_TOKEN): full access to every business. */
  consoleOperatorToken: string;
  /** Signs the ops console's session cookies (CONSOLE_SESSION_SECRET); a new one signs everybody out. */
  consoleSessionSecret: string;
}

/** URL-safe base64: no quoting needed in a URL, a properties file or JAAS. */
const newSecret = () => randomBytes(24).toString("base64url");

export function stackSecrets(s: StackSettings): StackSecrets {
  const file = join(s.dir, "secrets.json");
  const stored: Partial<StackSecrets> = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
  const secrets = {
    jwtSecret: stored.jwtSecret ?? randomBytes(32).toString("base64url"),
    logHashSecret: stored.logHashSecret ?? randomBytes(32).toString("base64url"),
    erasureHashSecret: stored.erasureHashSecret ?? randomBytes(32).toString("base64url"),
    automationsSecretKey: stored.automationsSecretKey ?? randomBytes(32).toString("base64url"),
    servicePassword: stored.servicePassword ?? newSecret(),
    debeziumPassword: stored.debeziumPassword ?? newSecret(),
    registryPassword: stored.registryPassword ?? newSecret(),
    consoleDbPassword: stored.consoleDbPassword ?? newSecret(),
    connectRestPassword: stored.connectRestPassword ?? newSecret(),
    consoleOperatorToken: stored.consoleOperatorToken ?? `op_${randomBytes(24).toString("base64url")}`,
    consoleSessionSecret: stored.consoleSessionSecret ?? randomBytes(32).toString("base64url"),
  };
  if (Object.keys(stored).length !== Object.keys(secrets).length) {
    mkdirSync(s.dir, { recursive: true });
    writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  }
  return secrets;
}

/** True when `s.dir` holds a stack of its own (a test's private Connect worker dir holds none). */
export function hasOwnSecrets(s: StackSettings): boolean {
  return existsSync(join(s.dir, "secrets.json"));
}

/** Roles the launcher and the migration know by name. */
export const ROLES = {
  service: "crm_service",
  debezium: "crm_debezium",
  registry: "crm_registry",
  console: "crm_console",
} as const;

/** The user of Connect's REST API. */
export const CONNECT_REST_USER = "connect-admin";
