import { describe, expect, it } from "vitest";
import { dueAt, dueCount, WeightedRoundRobin } from "./pacing.ts";

describe("open-loop pacing", () => {
  it("schedules request i at i / rate, independent of earlier responses", () => {
    expect(dueAt(0, 1_000)).toBe(0);
    expect(dueAt(1_000, 1_000)).toBe(1_000);
    expect(dueAt(3, 200)).toBe(15);
  });

  it("counts the requests due by a time, so a late tick catches up with a burst", () => {
    expect(dueCount(-1, 1_000)).toBe(0);
    expect(dueCount(0, 1_000)).toBe(1);
    expect(dueCount(9.99, 1_000)).toBe(10);
    // a tick 50 ms late owes everything due in between
    expect(dueCount(1_050, 1_000) - dueCount(1_000, 1_000)).toBe(50);
  });
});

describe("WeightedRoundRobin", () => {
  it("gives each stream its share, spread rather than bunched", () => {
    const chooser = new WeightedRoundRobin([81, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    const picks = Array.from({ length: 900 }, () => chooser.next());
    const counts = picks.reduce<number[]>((acc, stream) => {
      acc[stream] = (acc[stream] ?? 0) + 1;
      return acc;
    }, []);
    expect(counts[0]).toBe(810);
    for (let stream = 1; stream < 10; stream++) expect(counts[stream]).toBe(10);
    // the cold streams never come twice in a row
    for (let i = 1; i < picks.length; i++) if (picks[i] !== 0) expect(picks[i - 1]).not.toBe(picks[i]);
  });

  it("alternates equal weights", () => {
    const chooser = new WeightedRoundRobin([1, 1]);
    expect([chooser.next(), chooser.next(), chooser.next(), chooser.next()]).toEqual([0, 1, 0, 1]);
  });
});
