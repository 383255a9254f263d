import { randomBytes } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { newWebhookSecret, openSecret, sealSecret, signWebhook } from "./webhook-secret.ts";

describe("webhook secrets", () => {
  it("signs as Standard Webhooks 1.0 says (checked by the reference library)", () => {
    const secret = newWebhookSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    const body = JSON.stringify({ type: "contact.created", data: { x: "é\u{1f600}" } });
    const timestamp = Math.floor(Date.now() / 1000);
    const signature = signWebhook(secret, "msg_1", timestamp, body);
    expect(signature).toBe(new Webhook(secret).sign("msg_1", new Date(timestamp * 1000), body));
  });

  it("seals with AES-256-GCM: opens with the key, not with another, and not when altered", () => {
    const key = randomBytes(32);
    const secret = newWebhookSecret();
    const sealed = sealSecret(secret, key);
    expect(sealed).not.toContain(secret.slice(6));
    expect(sealSecret(secret, key)).not.toBe(sealed);
    expect(openSecret(sealed, key)).toBe(secret);
    expect(() => openSecret(sealed, randomBytes(32))).toThrow();
    const altered = `${sealed.slice(0, -2)}${sealed.endsWith("A") ? "B" : "A"}A`;
    expect(() => openSecret(altered, key)).toThrow();
  });
});
