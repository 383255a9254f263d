import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeContactChanges } from "./test-support.ts";

// crm_events -> the connector's second Event Router -> events.applied.v1: what segments and automations rely on.
describe("crm_events -> events.applied.v1", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 5 });
  let probe: TopicProbe;

  beforeAll(async () => {
    probe = await new TopicProbe(env.brokers, TOPICS.eventsApplied).start({ fromEnd: true });
  });

  afterAll(async () => {
    await probe?.stop();
    await admin.end();
  });

  it("every stored event arrives keyed by the contact it was applied to; a merge's moves of events do not", async () => {
    const { businessId } = await createBusiness(admin);
    // Four events per person; the third merges two contacts, which moves the second contact's events (UPDATE).
    await writeContactChanges(admin, businessId, { persons: 50, concurrency: 4 });
    const { rows: events } = await admin.query<{ id: string; type: string }>(
      "SELECT id, type FROM crm_events WHERE business_id = $1",
      [businessId],
    );
    expect(events.length).toBe(200);

    const messages = await poll(
      "every event id on events.applied.v1",
      async () => {
        const mine = probe.forBusiness(businessId);
        return new Set(mine.map((m) => m.headers.id)).size >= events.length ? mine : undefined;
      },
      { timeoutMs: 60_000 },
    );
    const types = new Map(events.map((e) => [e.id, e.type]));
    expect(new Set(messages.map((m) => m.headers.id))).toEqual(new Set(types.keys()));
    for (const m of messages) {
      expect(m.headers.type).toBe(types.get(m.headers.id!));
      expect(m.headers.occurred_at).toMatch(/^\d{4}-\d{2}-\d{2}T/);
      expect(m.key).toMatch(/^[0-9a-f-]{36}$/);
      expect(typeof m.value).toBe("object");
    }
    // The moved rows (UPDATEs) were dropped by the router: only inserts, so no id arrives under a second key.
    const keysById = new Map<string, Set<string>>();
    for (const m of messages)
      keysById.set(m.headers.id!, (keysById.get(m.headers.id!) ?? new Set()).add(m.key!));
    expect([...keysById.values()].filter((keys) => keys.size > 1)).toEqual([]);
  });
});
