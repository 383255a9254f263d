import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The service's Prometheus metrics. Labels carry bounded values only, never ids. */
export function createAutomationsMetrics() {
  const registry = new Registry();
  return {
    registry,
    inputs: new Counter({
      name: "automations_inputs_total",
      help: "Consumed messages by topic and outcome (matched, unmatched, invalid, unknown_contact)",
      labelNames: ["topic", "outcome"],
      registers: [registry],
    }),
    messages: new Counter({
      name: "automations_messages_total",
      help: "Logical messages created (a redelivered input creates none)",
      registers: [registry],
    }),
    attempts: new Counter({
      name: "automations_attempts_total",
      help: "Delivery attempts by outcome (succeeded, failed, timeout, refused, gone)",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    deliveries: new Counter({
      name: "automations_deliveries_total",
      help: "Deliveries finished, by outcome (succeeded, failed)",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    attemptSeconds: new Histogram({
      name: "automations_attempt_seconds",
      help: "Duration of one attempt",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15],
      registers: [registry],
    }),
    firstAttemptLagSeconds: new Histogram({
      name: "automations_first_attempt_lag_seconds",
      help: "From the input reaching Kafka to the first attempt's start",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    pending: new Gauge({
      name: "automations_pending_deliveries",
      help: "Deliveries not finished",
      registers: [registry],
    }),
    queueAgeSeconds: new Gauge({
      name: "automations_queue_age_seconds",
      help: "How long the oldest due delivery has waited",
      registers: [registry],
    }),
    disabledEndpoints: new Gauge({
      name: "automations_disabled_endpoints",
      help: "Endpoints disabled (by hand, by a 410, or failing too long)",
      registers: [registry],
    }),
    endpointsDisabled: new Counter({
      name: "automations_endpoints_disabled_total",
      help: "Endpoints this instance disabled, by reason (gone, failing)",
      labelNames: ["reason"],
      registers: [registry],
    }),
  };
}
export type AutomationsMetrics = ReturnType<typeof createAutomationsMetrics>;
