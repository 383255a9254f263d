import { writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { poll } from "@crm/process";
import { identityFor } from "./identity-mix.ts";
import { dueAt, dueCount, WeightedRoundRobin } from "./pacing.ts";

/*
 * Child process: an open-loop generator at a fixed rate (see pacing.ts), for the fixed-rate latency scenarios and
 * the end-to-end ones. Each stream is one business with its ingest key and its own identity-mix sequence. It
 * writes every request's due time, latency, status and event ids to `outFile`, so the parent can match the event
 * ids against contact.updated.v1. Config: one JSON argument (PacedLoadConfig).
 */

export interface PacedLoadConfig {
  url: string;
  /** Ingest key of each stream (business). */
  keys: string[];
  /** Traffic share of each stream. */
  weights: number[];
  /** Requests per second (a batch request counts once). */
  rate: number;
  warmupS: number;
  durationS: number;
  mode: "track" | "batch";
  batchSize: number;
  /** Requests in flight beyond which the generator records a drop instead of sending (it is itself overloaded). */
  maxInFlight: number;
  outFile: string;
  /** Added to the stream number in identities, so two runs against one business never repeat each other's. */
  streamBase: number;
  /** Each request with a new Idempotency-Key (track mode; issue 13's keyed singles at a fixed rate). */
  idempotencyKeys?: boolean;
}

export interface PacedRecord {
  /** Epoch ms at which the request was due. */
  dueAt: number;
  /** Epoch ms of the response (0 when none). */
  doneAt: number;
  stream: number;
  status: number;
  eventIds: string[];
  /** Events in the request whose kind makes a contact change (new or merge), by event id. */
  changing: string[];
  warmup: boolean;
}

const config = JSON.parse(process.argv[2] ?? "{}") as PacedLoadConfig;
const origin = new URL(config.url);
const agent = new Agent({ keepAlive: true, maxSockets: 1_024 });
const chooser = new WeightedRoundRobin(config.weights);
const streamRate = (stream: number) =>
  (config.rate * (config.mode === "batch" ? config.batchSize : 1) * config.weights[stream]!) /
  config.weights.reduce((sum, weight) => sum + weight, 0);
// Merges pair contacts created at least ~2 s earlier on this stream (they travel on other keys).
const mergeLag = config.keys.map((_, stream) => Math.max(1, Math.ceil((streamRate(stream) * 2) / 20)));
const sequence = config.keys.map(() => 0);
const records: PacedRecord[] = [];
const total = Math.floor(config.rate * (config.warmupS + config.durationS));
const epochAt = (perfMs: number) => performance.timeOrigin + perfMs;
// Keys new to every business: this process's id and start time, then the request's number.
const keyPrefix = `paced-${process.pid.toString(36)}-${Date.now().toString(36)}`;
let inFlight = 0;
let dropped = 0;
let maxInFlightSeen = 0;

function nextBody(stream: number): { body: unknown; kinds: string[] } {
  const one = () => {
    const { kind, contact } = identityFor(config.streamBase + stream, sequence[stream]!++, mergeLag[stream]);
    return { kind, event: { type: `bench.${kind}`, contact, props: { plan: "pro", amount: 42 } } };
  };
  if (config.mode === "track") {
    const { kind, event } = one();
    return { body: event, kinds: [kind] };
  }
  const items = Array.from({ length: config.batchSize }, one);
  return { body: { events: items.map((item) => item.event) }, kinds: items.map((item) => item.kind) };
}

function fire(index: number, startPerf: number): void {
  const stream = chooser.next();
  const due = startPerf + dueAt(index, config.rate);
  const warmup = index < config.rate * config.warmupS;
  const { body, kinds } = nextBody(stream);
  if (inFlight >= config.maxInFlight) {
    dropped++;
    records.push({ dueAt: epochAt(due), doneAt: 0, stream, status: 0, eventIds: [], changing: [], warmup });
    return;
  }
  inFlight++;
  maxInFlightSeen = Math.max(maxInFlightSeen, inFlight);
  const payload = JSON.stringify(body);
  const req = request(
    {
      agent,
      host: origin.hostname,
      port: origin.port,
      method: "POST",
      path: config.mode === "track" ? "/v1/track" : "/v1/batch",
      headers: {
        authorization: `Bearer ${config.keys[stream]}`,
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
        ...(config.idempotencyKeys ? { "idempotency-key": `${keyPrefix}-${index}` } : {}),
      },
    },
    (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const doneAt = epochAt(performance.now());
        inFlight--;
        let eventIds: string[] = [];
        try {
          const parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
            event_id?: string;
            results?: { event_id?: string }[];
          };
          eventIds = parsed.event_id
            ? [parsed.event_id]
            : (parsed.results ?? []).map((result) => result.event_id ?? "");
        } catch {}
        const changing = eventIds.filter((id, i) => id && kinds[i] !== "repeat");
        records.push({
          dueAt: epochAt(due),
          doneAt,
          stream,
          status: res.statusCode ?? 0,
          eventIds,
          changing,
          warmup,
        });
      });
    },
  );
  req.on("error", () => {
    inFlight--;
    records.push({
      dueAt: epochAt(due),
      doneAt: epochAt(performance.now()),
      stream,
      status: 0,
      eventIds: [],
      changing: [],
      warmup,
    });
  });
  req.end(payload);
}

async function run(): Promise<void> {
  const start = performance.now();
  let next = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(total, dueCount(performance.now() - start, config.rate));
      while (next < due) fire(next++, start);
      if (next < total) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  // Let the last responses arrive (bounded).
  await poll("the last responses", () => inFlight === 0, {
    timeoutMs: 15_000,
    intervalMs: 20,
    throwOnTimeout: false,
  });
  writeFileSync(
    config.outFile,
    JSON.stringify({ records, dropped, maxInFlight: maxInFlightSeen, unanswered: inFlight }),
  );
  agent.destroy();
}

await run();
