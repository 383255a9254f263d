import { describe, expect, it } from "vitest";
import { counterSum } from "./rates.ts";
import { rateChart } from "./views/overview.ts";

describe("counterSum", () => {
  const text = [
    "# HELP ingest_events_total Events by outcome",
    'ingest_events_total{outcome="accepted"} 12',
    'ingest_events_total{outcome="rejected"} 3',
    "ingest_events_total_created 99",
    'resolver_events_applied_total{outcome="created"} 5',
  ].join("\n");

  it("sums one counter's samples whose labels match", () => {
    expect(counterSum(text, "ingest_events_total")).toBe(15);
    expect(counterSum(text, "ingest_events_total", (l) => l.includes('"accepted"'))).toBe(12);
    expect(counterSum(text, "missing_total")).toBeUndefined();
  });
});

describe("rateChart", () => {
  it("draws one line per stage and says the latest rates for screen readers", () => {
    const now = Date.now();
    const points = [1, 2, 3].map((i) => ({
      at: now - (3 - i) * 5_000,
      accepted: i,
      applied: i,
      published: null,
    }));
    const svg = rateChart(points, now);
    expect(svg.match(/<polyline/g)).toHaveLength(2);
    expect(svg).toContain("latest: accepted 3.0, applied 3.0, published –");
  });
});
