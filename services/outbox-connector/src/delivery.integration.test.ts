import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { topicValidator } from "@crm/schema-registry";
import { createBusiness, TopicProbe, testEnv } from "@crm/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { percentile, versionsByContact, writeContactChanges } from "./test-support.ts";

// Through the shared pipeline: app.resolve_contact -> outbox -> the real Debezium connector -> contact.updated.v1.
describe("outbox -> contact.updated.v1", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 5 });
  let collector: TopicProbe;

  beforeAll(async () => {
    collector = await new TopicProbe(env.brokers, TOPICS.contactUpdated).start({ fromEnd: true });
  });

  afterAll(async () => {
    await collector?.stop();
    await admin.end();
  });

  it("every outbox row of a few thousand changes arrives, valid, per contact in version order", async () => {
    const { businessId } = await createBusiness(admin);
    const written = await writeContactChanges(admin, businessId, { persons: 600, concurrency: 4 });
    const outboxIds = new Set(written.flatMap((w) => w.outboxIds));
    const { rows } = await admin.query<{ id: string }>("SELECT id FROM outbox WHERE business_id = $1", [
      businessId,
    ]);
    // created, created, merged + merged_away, updated: five rows per person, all of them ours.
    expect(rows.length).toBe(3_000);
    expect(new Set(rows.map((r) => r.id))).toEqual(outboxIds);

    const messages = await poll(
      "every outbox id on contact.updated.v1",
      async () => {
        const mine = collector.forBusiness(businessId);
        return new Set(mine.map((m) => m.headers.id)).size >= outboxIds.size ? mine : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(new Set(messages.map((m) => m.headers.id))).toEqual(outboxIds);

    // Real payloads from app.contact_change_payload match the published schema strictly (no undeclared field).
    const validate = topicValidator("contact.updated.v1");
    const invalid = messages.map((m) => validate(m.value)).filter((r) => !r.ok);
    expect(invalid).toEqual([]);
    const changes = new Set(messages.map((m) => (m.value as { change: string }).change));
    expect(changes).toEqual(new Set(["created", "merged", "merged_away", "updated"]));
    for (const m of messages) expect(m.key).toBe((m.value as { contact_id: string }).contact_id);

    const versions = versionsByContact(messages);
    expect(versions.size).toBe(1_200);
    for (const [contact, list] of versions) {
      const increasing = list.every((v, i) => i === 0 || v > list[i - 1]!);
      expect(increasing, `versions of ${contact}: ${list.join(",")}`).toBe(true);
    }

    const committedAt = new Map<string, number>();
    for (const w of written) for (const id of w.outboxIds) committedAt.set(id, w.committedAt);
    const firstSeen = new Map<string, number>();
    for (const m of messages) {
      const id = m.headers.id;
      if (id && !firstSeen.has(id)) firstSeen.set(id, m.receivedAt);
    }
    const latencies = [...firstSeen].map(([id, at]) => at - committedAt.get(id)!).sort((a, b) => a - b);
    const duplicates = messages.length - outboxIds.size;
    console.log(
      `[outbox latency] commit -> consumed from contact.updated.v1 over ${latencies.length} changes: ` +
        `p50 ${percentile(latencies, 50)} ms, p95 ${percentile(latencies, 95)} ms, max ${latencies.at(-1)} ms; ` +
        `duplicates ${duplicates}`,
    );
  });
});
