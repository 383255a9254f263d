import type { Scenario } from "../bench-run.ts";
import { appliedThroughput } from "./applied-throughput.ts";
import { automations } from "./automations.ts";
import { batches } from "./batches.ts";
import { endToEndLatency, endToEndLatencyHigh } from "./end-to-end-latency.ts";
import { erasure } from "./erasure.ts";
import { hotTenant } from "./hot-tenant.ts";
import { httpLimit } from "./http-limit.ts";
import { idempotencyKeys } from "./idempotency-keys.ts";
import { kafkaProducerLimit } from "./kafka-producer-limit.ts";
import { keyedBatches } from "./keyed-batches.ts";
import { pgbenchLimit } from "./pgbench-limit.ts";
import { segments } from "./segments.ts";
import { singleEvents } from "./single-events.ts";

/**
 * Every scenario in the order they run. 5 compares with 4's latency run, so that one comes first; the applied
 * run saturates the worker and goes after both; the limits come last, with the Kafka producer's record size
 * measured from what the API sent before.
 */
export const SCENARIOS: Scenario[] = [
  singleEvents,
  batches,
  idempotencyKeys,
  keyedBatches,
  endToEndLatency,
  hotTenant,
  endToEndLatencyHigh,
  appliedThroughput,
  kafkaProducerLimit,
  httpLimit,
  pgbenchLimit,
  erasure,
  // only with BENCH_ONLY=8 (not in the default selection): services/segments, issue 16
  segments,
  automations,
];
