import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

/**
 * The API's Prometheus metrics (SPEC 10). Labels never carry keys, user ids or contact data; business ids only on
 * the rejected-message counter, which issue 15 asks to count per business (bounded by the businesses with keys).
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({
      name: "ingest_http_requests_total",
      help: "HTTP requests by route and status",
      labelNames: ["method", "route", "status"] as const,
      registers: [registry],
    }),
    requestSeconds: new Histogram({
      name: "ingest_http_request_duration_seconds",
      help: "HTTP request latency by route",
      labelNames: ["method", "route"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    produceSeconds: new Histogram({
      name: "ingest_kafka_produce_duration_seconds",
      help: "Time from send to Kafka acknowledgement (acks=all), by outcome",
      labelNames: ["outcome"] as const,
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    events: new Counter({
      name: "ingest_events_total",
      help: "Events by outcome: accepted, idempotent_replay, rejected",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    authFailures: new Counter({
      name: "ingest_auth_failures_total",
      help: "Requests refused with 401, by reason (malformed ones cost no lookup)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    connectionsRefused: new Counter({
      name: "ingest_connections_refused_total",
      help: "Connections closed before the app saw a request: max_connections, request_timeout, headers_too_large, invalid_request",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    segmentMessages: new Counter({
      name: "ingest_segment_messages_total",
      help: "Messages of the Segment-compatible listener by outcome: accepted, replayed (messageId seen), rejected",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    rejectedMessages: new Counter({
      name: "ingest_rejected_messages_total",
      help: "Messages refused one by one while their request was answered 200 (kept in rejected_events), by business and reason",
      labelNames: ["business_id", "reason"] as const,
      registers: [registry],
    }),
    databaseCheckouts: new Counter({
      name: "ingest_db_checkouts_total",
      help: "Clients taken from the API's Postgres pool (each query or transaction takes one): what requests cost the database",
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: "ingest_rate_limited_total",
      help: "Requests refused with 429, by caller kind (address: too many failed authentications before auth)",
      labelNames: ["caller_kind"] as const,
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
