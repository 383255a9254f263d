// Helpers for this service's integration tests (not used at run time).
import { randomUUID } from "node:crypto";
import type { ProbedMessage } from "@crm/testing";
import type pg from "pg";
import type { ConnectorSpec } from "./connector.ts";

/** A copy of the checked-in connector (its outbox part) under its own name, slot and topic prefix, routing to `topic`. */
export function connectorCopy(base: ConnectorSpec, suffix: string, topic: string): ConnectorSpec {
  const prefix = `crmtest${suffix}`;
  return {
    name: `crm-outbox-test-${suffix}`,
    config: {
      ...base.config,
      "slot.name": `crm_outbox_test_${suffix}`,
      // the outbox only: a copy must not publish applied events again
      "table.include.list": "public.outbox",
      "topic.prefix": prefix,
      "predicates.isOutboxTable.pattern": `${prefix}\\.public\\.outbox`,
      "transforms.outbox.route.topic.replacement": topic,
    },
  };
}

/** Topics Connect creates for a connector copy (heartbeats, heartbeat-table changes), to delete afterwards. */
export function connectorCopyTopics(spec: ConnectorSpec): string[] {
  const prefix = spec.config["topic.prefix"]!;
  return [`__debezium-heartbeat.${prefix}`, `${prefix}.app.debezium_heartbeat`];
}

export interface WrittenChange {
  outboxIds: string[];
  committedAt: number;
}

/**
 * Writes contact changes the way the resolver does (app.resolve_contact in a tenant transaction, as admin) for
 * `persons` people of one business, four events each so every kind of change happens: email only (created),
 * phone only (a second contact, created), both (merged + merged_away), a new name (updated). People run
 * `concurrency` at a time; one person's events run in order. Returns the outbox ids of each transaction and
 * when it committed.
 */
export async function writeContactChanges(
  pool: pg.Pool,
  businessId: string,
  options: { persons: number; concurrency?: number; pauseMs?: number; onProgress?: (done: number) => void },
): Promise<WrittenChange[]> {
  const written: WrittenChange[] = [];
  let next = 0;
  let events = 0;
  const tag = randomUUID().slice(0, 8);
  const worker = async () => {
    for (let person = next++; person < options.persons; person = next++) {
      const email = `p${person}-${tag}@example.com`;
      const phone = `+1555${String(1_000_000 + person).slice(-7)}`;
      const steps: [string | null, string | null, string | null][] = [
        [email, null, `Person ${person}`],
        [null, phone, null],
        [email, phone, null],
        [email, null, `Person ${person} Renamed`],
      ];
      for (const [e, p, name] of steps) {
        written.push(await writeOne(pool, businessId, e, p, name));
        options.onProgress?.(++events);
        if (options.pauseMs) await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 4 }, worker));
  return written;
}

async function writeOne(
  pool: pg.Pool,
  businessId: string,
  email: string | null,
  phone: string | null,
  name: string | null,
): Promise<WrittenChange> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT set_config('app.business_id', $1, true)", [businessId]);
    await client.query("SELECT * FROM app.resolve_contact($1, $2, $3, NULL, $4, $5)", [
      businessId,
      email,
      phone,
      name,
      randomUUID(),
    ]);
    const { rows } = await client.query<{ id: string }>(
      "SELECT id FROM outbox WHERE txid = pg_current_xact_id() ORDER BY id",
    );
    await client.query("COMMIT");
    return { outboxIds: rows.map((r) => r.id), committedAt: Date.now() };
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Per contact (message key), the versions in the order they arrived, duplicates (same outbox id) removed. */
export function versionsByContact(messages: ProbedMessage[]): Map<string, number[]> {
  const seen = new Set<string>();
  const byContact = new Map<string, number[]>();
  const ordered = [...messages].sort((a, b) =>
    a.partition !== b.partition ? a.partition - b.partition : Number(BigInt(a.offset) - BigInt(b.offset)),
  );
  for (const m of ordered) {
    const id = m.headers.id;
    if (!id || seen.has(id)) continue;
    seen.add(id);
    const list = byContact.get(m.key ?? "") ?? [];
    list.push((m.value as { version: number }).version);
    byContact.set(m.key ?? "", list);
  }
  return byContact;
}
