import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { TriggerRounds } from "./consumer.ts";
import type { ContactTrigger } from "./reevaluate.ts";

const event = (contactId: string, type: string): ContactTrigger => ({
  contactId,
  cause: { cause: "event" },
  eventTypes: new Set([type]),
});

describe("TriggerRounds", () => {
  it("evaluates the triggers handed over by many batches together, one evaluation per contact", async () => {
    const calls: Array<{ businessId: string; triggers: ContactTrigger[] }> = [];
    const rounds = new TriggerRounds({
      chunk: 100,
      lingerMs: 20,
      evaluationConcurrency: 2,
      reevaluate: async (businessId, triggers) => {
        calls.push({ businessId, triggers });
      },
    });
    const [a, b, contact] = [randomUUID(), randomUUID(), randomUUID()];
    // two partitions' batches and the contact topic's batch, within the linger
    await Promise.all([
      rounds.add(new Map([[a, [event(contact, "purchase")]]])),
      rounds.add(new Map([[a, [{ contactId: contact, cause: { cause: "merge" }, all: true }]]])),
      rounds.add(new Map([[b, [event(randomUUID(), "login")]]])),
    ]);
    expect(calls.map((c) => c.businessId).sort()).toEqual([a, b].sort());
    const ofA = calls.find((c) => c.businessId === a)!.triggers;
    expect(ofA).toHaveLength(1);
    expect(ofA[0]).toMatchObject({ contactId: contact, all: true, cause: { cause: "merge" } });
    expect(ofA[0]!.eventTypes).toEqual(new Set(["purchase"]));
  });

  it("splits a business into chunks; a failed transaction rejects every batch of its round, the next round runs", async () => {
    const sizes: number[] = [];
    let fail = true;
    const rounds = new TriggerRounds({
      chunk: 3,
      lingerMs: 5,
      evaluationConcurrency: 1,
      reevaluate: async (_businessId, triggers) => {
        sizes.push(triggers.length);
        if (fail) throw new Error("postgres went away");
      },
    });
    const business = randomUUID();
    const seven = Array.from({ length: 7 }, () => event(randomUUID(), "view"));
    const first = rounds.add(new Map([[business, seven.slice(0, 4)]]));
    const second = rounds.add(new Map([[business, seven.slice(4)]]));
    await expect(first).rejects.toThrow("postgres went away");
    await expect(second).rejects.toThrow("postgres went away");
    // with one lane, the first failure stops the round: its other chunks are not attempted
    expect(sizes).toEqual([3]);
    fail = false;
    sizes.length = 0;
    await rounds.add(new Map([[business, seven]]));
    expect(sizes).toEqual([3, 3, 1]);
  });

  it("hands what arrives during a round to the next one, which starts when it ends", async () => {
    let release: () => void = () => {};
    const seen: string[][] = [];
    const rounds = new TriggerRounds({
      chunk: 100,
      lingerMs: 5,
      evaluationConcurrency: 1,
      reevaluate: async (_businessId, triggers) => {
        seen.push(triggers.map((t) => t.contactId));
        if (seen.length === 1) await new Promise<void>((resolve) => (release = resolve));
      },
    });
    const business = randomUUID();
    const [x, y, z] = [randomUUID(), randomUUID(), randomUUID()];
    const first = rounds.add(new Map([[business, [event(x, "a")]]]));
    await new Promise((resolve) => setTimeout(resolve, 30));
    const second = rounds.add(new Map([[business, [event(y, "a")]]]));
    const third = rounds.add(new Map([[business, [event(z, "a")]]]));
    release();
    await Promise.all([first, second, third]);
    expect(seen).toEqual([[x], [y, z]]);
  });

  it("room() holds a caller while more triggers than the limit wait, until a round takes them", async () => {
    let release: () => void = () => {};
    const rounds = new TriggerRounds({
      chunk: 100,
      lingerMs: 1,
      evaluationConcurrency: 1,
      reevaluate: async () => {
        await new Promise<void>((resolve) => (release = resolve));
      },
    });
    const business = randomUUID();
    const first = rounds.add(new Map([[business, [event(randomUUID(), "a")]]]));
    await new Promise((resolve) => setTimeout(resolve, 20));
    // the first round runs; three more triggers wait for the next one
    const second = rounds.add(
      new Map([[business, [event(randomUUID(), "a"), event(randomUUID(), "a"), event(randomUUID(), "a")]]]),
    );
    await rounds.room(3);
    let roomy = false;
    const held = rounds.room(2).then(() => {
      roomy = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(roomy).toBe(false);
    release();
    await held;
    expect(roomy).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 5));
    release();
    await Promise.all([first, second]);
  });
});
