import { createPool, transaction } from "@crm/db";
import type { RawEventV1 } from "@crm/schemas";
import { createBusiness, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { decodeRawEvent } from "./decode-event.ts";
import { resolveContact, resolveContacts } from "./resolve-contact.ts";
import { identityGroups, invariantViolations, rawEvent } from "./test-harness.ts";

// Junk identifiers (SPEC 7.1, issue 11): a business's junk list is compared on one form of both sides, NFKC then
// lowercase, so a look-alike spelling of a junk value never links two people. The event keeps the value as sent.
const env = testEnv();
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
const service = createPool({ connectionString: env.databaseUrl, applicationName: "junk-test", max: 4 });

afterAll(async () => {
  await Promise.all([admin.end(), service.end()]);
});

/** Decodes the event like the consumer does (normalization included) and applies it. */
const decoded = (event: RawEventV1) => decodeRawEvent(Buffer.from(JSON.stringify(event)));

const sentExternalIds = async (businessId: string) =>
  (
    await admin.query<{ external_id: string }>(
      "SELECT contact->>'external_id' AS external_id FROM crm_events WHERE business_id = $1",
      [businessId],
    )
  ).rows
    .map((row) => row.external_id)
    .sort();

describe("junk identifiers", () => {
  it("fullwidth ｎｕｌｌ (and Null, ＮＵＬＬ) as external_id never links identities; the event keeps it as sent", async () => {
    const { businessId } = await createBusiness(admin);
    const results = [];
    for (const contact of [
      { external_id: "ｎｕｌｌ", email: "a@example.com" },
      { external_id: "ｎｕｌｌ", email: "b@example.com" },
      { external_id: "Null", phone: "+15551234567" },
      { external_id: "ＮＵＬＬ" },
    ]) {
      results.push(await resolveContact(service, decoded(rawEvent(businessId, contact))));
    }
    expect(new Set(results.map((r) => r.contactId)).size).toBe(4);
    expect(await identityGroups(admin, businessId)).toEqual([
      "email:a@example.com",
      "email:b@example.com",
      "phone:+15551234567",
    ]);
    expect(await sentExternalIds(businessId)).toEqual(["Null", "ＮＵＬＬ", "ｎｕｌｌ", "ｎｕｌｌ"]);
    expect(await invariantViolations(admin, businessId)).toEqual([]);
  });

  it("the same in a chunk (app.resolve_contacts, while the worker catches up)", async () => {
    const { businessId } = await createBusiness(admin);
    const results = await resolveContacts(service, [
      decoded(rawEvent(businessId, { external_id: "ｎｕｌｌ", email: "c@example.com" })),
      decoded(rawEvent(businessId, { external_id: "ｎｕｌｌ", email: "d@example.com" })),
    ]);
    expect(results[0]!.contactId).not.toBe(results[1]!.contactId);
    expect(await identityGroups(admin, businessId)).toEqual(["email:c@example.com", "email:d@example.com"]);
  });

  it("a junk entry written in any width or case matches, for email and phone as well", async () => {
    const { businessId } = await createBusiness(admin);
    await admin.query("UPDATE businesses SET junk_values = ARRAY['Ｖｉｓｉｔｏｒ'] WHERE id = $1", [
      businessId,
    ]);
    // The worker's own normalization refuses these as an email or a phone; called directly, the function must still
    // treat them as junk, whatever the producer.
    const resolveDirect = (ext: string, email: string, phone: string) =>
      transaction(
        service,
        "junk_test",
        async (client) =>
          (
            await client.query<{ contact_id: string }>(
              "SELECT contact_id FROM app.resolve_contact($1, $2, $3, $4, NULL)",
              [businessId, email, phone, ext],
            )
          ).rows[0]!.contact_id,
        { businessId },
      );
    const first = await resolveDirect("visitor", "VISITOR", "ｖｉｓｉｔｏｒ");
    const second = await resolveDirect("ＶＩＳＩＴＯＲ", "visitor", "Visitor");
    expect(first).not.toBe(second);
    expect(await identityGroups(admin, businessId)).toEqual([]);
    expect(await sentExternalIds(businessId)).toEqual(["visitor", "ＶＩＳＩＴＯＲ"]);
  });
});
