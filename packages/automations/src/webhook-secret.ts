import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  type KeyObject,
  randomBytes,
} from "node:crypto";

// Standard Webhooks 1.0: a secret is `whsec_` + base64 of the key bytes; a signature is `v1,` + base64 of
// HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" keyed with those bytes.

const PREFIX = "whsec_";

/** A new endpoint secret: 24 random bytes (as Svix issues them), shown once to the owner. */
export function newWebhookSecret(): string {
  return PREFIX + randomBytes(24).toString("base64");
}

/** The key bytes of a `whsec_` secret. */
export function secretKeyBytes(secret: string): Buffer {
  return Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, "base64");
}

/** A secret's key as a KeyObject, for signing many messages with it (no decoding per signature). */
export function signingKey(secret: string): KeyObject {
  return createSecretKey(secretKeyBytes(secret));
}

/** `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>` with one secret (or its `signingKey`). */
export function signWebhook(
  secret: string | KeyObject,
  id: string,
  timestampSeconds: number,
  body: string,
): string {
  const mac = createHmac("sha256", typeof secret === "string" ? secretKeyBytes(secret) : secret)
    .update(`${id}.${timestampSeconds}.${body}`)
    .digest("base64");
  return `v1,${mac}`;
}

/** The deployment key (AUTOMATIONS_SECRET_KEY: 32 bytes, base64 or base64url) that seals secrets at rest. */
export function deploymentKey(text: string): Buffer {
  const key = Buffer.from(text, "base64url");
  if (key.length !== 32) throw new Error("AUTOMATIONS_SECRET_KEY must be 32 bytes in base64url");
  return key;
}

/**
 * A secret sealed for storage: AES-256-GCM with a random 12-byte nonce, `v1.` + base64url(nonce | tag | text).
 * A database dump alone cannot sign webhooks; the key lives in the deployment's environment (.stack/env).
 */
export function sealSecret(secret: string, key: Buffer): string {
  const nonce = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  const text = Buffer.concat([cipher.update(secret, "utf8"), cipher.final()]);
  return `v1.${Buffer.concat([nonce, cipher.getAuthTag(), text]).toString("base64url")}`;
}

/** The secret of `sealSecret`; throws when the key is not the one that sealed it or the text was altered. */
export function openSecret(sealed: string, key: Buffer): string {
  if (!sealed.startsWith("v1.")) throw new Error("unknown sealed secret format");
  const raw = Buffer.from(sealed.slice(3), "base64url");
  const decipher = createDecipheriv("aes-256-gcm", key, raw.subarray(0, 12));
  decipher.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString("utf8");
}
