import { DependencyUnavailableError } from "@crm/errors";
import type { EventProducer, OutgoingMessage } from "@crm/kafka";
import type { RawEventV1 } from "@crm/schemas";
import type { ClaimOutcome, IdempotencyStore } from "./idempotency.ts";

/** A producer that keeps what it was given (or fails like an unreachable Kafka), for unit tests. */
export class FakeProducer implements EventProducer {
  sent: OutgoingMessage[] = [];
  failing = false;
  async send(_topic: string, messages: OutgoingMessage[]) {
    if (this.failing) throw new DependencyUnavailableError("kafka", "down");
    this.sent.push(...messages);
  }
  async close() {}
  /** The plain-JSON values sent, parsed. */
  events(): RawEventV1[] {
    return this.sent.map((m) => JSON.parse(String(m.value)));
  }
}

/** Idempotency records in memory with the store's semantics (claimed, replay, mismatch, in flight), for unit tests. */
export class MemoryIdempotency implements IdempotencyStore {
  records = new Map<string, { hash: string; eventId: string; done: boolean }>();
  async claim(businessId: string, caller: string, claims: { key: string; requestHash: string }[]) {
    const outcomes = claims.map(({ key, requestHash }): ClaimOutcome => {
      const id = `${businessId}|${caller}|${key}`;
      const found = this.records.get(id);
      if (!found) {
        const eventId = crypto.randomUUID();
        this.records.set(id, { hash: requestHash, eventId, done: false });
        return { kind: "claimed", eventId };
      }
      if (found.hash !== requestHash) return { kind: "mismatch" };
      return found.done
        ? { kind: "replay", eventId: found.eventId }
        : { kind: "in_flight", retryAfterSeconds: 1 };
    });
    return outcomes;
  }
  async complete(businessId: string, caller: string, eventIds: string[]) {
    for (const id of this.idsOf(businessId, caller, eventIds)) this.records.get(id)!.done = true;
  }
  async release(businessId: string, caller: string, eventIds: string[]) {
    for (const id of this.idsOf(businessId, caller, eventIds)) this.records.delete(id);
  }
  async drain() {}
  private idsOf(businessId: string, caller: string, eventIds: string[]) {
    const prefix = `${businessId}|${caller}|`;
    return [...this.records]
      .filter(([id, record]) => id.startsWith(prefix) && eventIds.includes(record.eventId))
      .map(([id]) => id);
  }
}
