import autocannon from "autocannon";
import { summarize } from "./stats.ts";

/*
 * Child process: closed-loop maximum throughput with autocannon (its API in this separate process, so the load
 * generator's CPU is its own and visible per process). Every request carries a new contact (a new Kafka key, as a
 * real producer's traffic spreads over keys) and, in `idempotent` mode, a new Idempotency-Key (in `batch-keyed`
 * mode, a batch whose every item has a new `idempotency_key`). Prints one JSON
 * line: requests/s and events/s of 2xx answers, status counts, latency summary. Config: one JSON argument.
 */

export interface MaxLoadConfig {
  url: string;
  key: string;
  mode: "track" | "batch" | "idempotent" | "batch-keyed";
  batchSize: number;
  connections: number;
  warmupS: number;
  durationS: number;
}

const config = JSON.parse(process.argv[2] ?? "{}") as MaxLoadConfig;
let counter = 0;
const tag = process.pid.toString(36);

function event() {
  const n = counter++;
  return {
    type: "bench.max",
    contact: { email: `m${tag}.${n}@bench.example`, name: `Max ${n}` },
    props: { plan: "pro", amount: 42 },
  };
}

function keyedEvent() {
  return { ...event(), idempotency_key: `bench-${tag}-${counter}` };
}

const batched = config.mode === "batch" || config.mode === "batch-keyed";

function setupRequest(req: autocannon.Request): autocannon.Request {
  const headers: Record<string, string> = {
    authorization: `Bearer ${config.key}`,
    "content-type": "application/json",
  };
  if (config.mode === "idempotent") headers["idempotency-key"] = `bench-${tag}-${counter}`;
  const body = batched
    ? { events: Array.from({ length: config.batchSize }, config.mode === "batch" ? event : keyedEvent) }
    : event();
  return { ...req, headers, body: JSON.stringify(body) };
}

async function phase(durationS: number, record: boolean) {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let instance: autocannon.Instance | undefined;
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(
      {
        url: `${config.url}${batched ? "/v1/batch" : "/v1/track"}`,
        method: "POST",
        connections: config.connections,
        duration: durationS,
        requests: [{ setupRequest }],
      },
      (error, result) => (error ? reject(error) : resolve(result)),
    );
  });
  instance!.on("response", (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    if (!record) return;
    statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
    latencies.push(responseTime);
  });
  const result = await done;
  return { result, latencies, statuses };
}

if (config.warmupS > 0) await phase(config.warmupS, false);
const { result, latencies, statuses } = await phase(config.durationS, true);
const ok = Object.entries(statuses)
  .filter(([status]) => status.startsWith("2"))
  .reduce((sum, [, count]) => sum + count, 0);
const seconds = result.duration;
console.log(
  JSON.stringify({
    requestsPerSec: ok / seconds,
    eventsPerSec: (ok * (batched ? config.batchSize : 1)) / seconds,
    seconds,
    statuses,
    errors: result.errors,
    timeouts: result.timeouts,
    latencyMs: summarize(latencies),
    connections: config.connections,
  }),
);
