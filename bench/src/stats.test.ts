import { describe, expect, it } from "vitest";
import {
  histogramQuantile,
  parseCounterTotal,
  parseGauge,
  parseHistogram,
  percentile,
  slope,
  summarize,
} from "./stats.ts";

describe("percentile and summarize", () => {
  it("uses the nearest rank", () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 95)).toBe(95);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile(values, 100)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it("summarizes unsorted samples without changing them", () => {
    const samples = [5, 1, 4, 2, 3];
    expect(summarize(samples)).toEqual({ count: 5, mean: 3, p50: 3, p95: 5, p99: 5, max: 5 });
    expect(samples).toEqual([5, 1, 4, 2, 3]);
  });
});

describe("Prometheus histograms", () => {
  const text = [
    "# HELP resolver_lock_hold_seconds x",
    'resolver_lock_hold_seconds_bucket{le="0.001"} 10',
    'resolver_lock_hold_seconds_bucket{le="0.002"} 90',
    'resolver_lock_hold_seconds_bucket{le="0.005"} 100',
    'resolver_lock_hold_seconds_bucket{le="+Inf"} 100',
    "resolver_lock_hold_seconds_sum 0.15",
    'resolver_events_applied_total{outcome="created"} 7',
    'resolver_events_applied_total{outcome="merged"} 3',
  ].join("\n");

  it("parses buckets and interpolates quantiles inside a bucket", () => {
    const buckets = parseHistogram(text, "resolver_lock_hold_seconds");
    expect(buckets).toHaveLength(4);
    // rank 50 of 100 lies half way through the (0.001, 0.002] bucket (10 -> 90).
    expect(histogramQuantile(buckets, 0.5)).toBeCloseTo(0.0015, 6);
    // rank 95: half way through (0.002, 0.005].
    expect(histogramQuantile(buckets, 0.95)).toBeCloseTo(0.0035, 6);
    expect(histogramQuantile([], 0.95)).toBeNaN();
  });

  it("reports the last finite bound when the quantile falls in +Inf", () => {
    expect(
      histogramQuantile(
        [
          { le: 0.01, count: 1 },
          { le: Number.POSITIVE_INFINITY, count: 10 },
        ],
        0.9,
      ),
    ).toBe(0.01);
  });

  it("filters labelled histograms and reads gauges", () => {
    const labelled = [
      'ingest_kafka_produce_duration_seconds_bucket{le="0.01",outcome="ok"} 4',
      'ingest_kafka_produce_duration_seconds_bucket{le="+Inf",outcome="ok"} 5',
      'ingest_kafka_produce_duration_seconds_bucket{le="0.01",outcome="error"} 0',
      'ingest_kafka_produce_duration_seconds_bucket{le="+Inf",outcome="error"} 9',
      "nodejs_eventloop_lag_p99_seconds 0.0125",
    ].join("\n");
    expect(parseHistogram(labelled, "ingest_kafka_produce_duration_seconds", { outcome: "ok" })).toEqual([
      { le: 0.01, count: 4 },
      { le: Number.POSITIVE_INFINITY, count: 5 },
    ]);
    expect(parseHistogram(labelled, "ingest_kafka_produce_duration_seconds")).toHaveLength(2);
    expect(parseGauge(labelled, "nodejs_eventloop_lag_p99_seconds")).toBe(0.0125);
    expect(parseGauge(labelled, "absent")).toBeNaN();
  });

  it("sums a counter over its labels", () => {
    expect(parseCounterTotal(text, "resolver_events_applied_total")).toBe(10);
  });
});

describe("slope", () => {
  it("fits growing and flat series", () => {
    expect(slope([0, 1, 2, 3].map((x) => ({ x, y: 100 + 50 * x })))).toBeCloseTo(50);
    expect(slope([0, 1, 2].map((x) => ({ x, y: 7 })))).toBe(0);
    expect(slope([{ x: 1, y: 1 }])).toBe(0);
  });
});
