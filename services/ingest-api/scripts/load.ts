/**
 * API throughput probe (development tool, not a test): starts the real ingest-api (`src/main.ts`) on a free port
 * with an ingest key of a fresh business and no effective rate limit, then drives it with autocannon:
 * `track` closed loop (max events/s), `batch` of 100 (events/s), and `paced` 1,000 req/s (latency percentiles);
 * each mode with `-keyed` (`track-keyed`, `batch-keyed`, `paced-keyed`) sends a new idempotency key per event.
 * Prints the API's CPU per accepted event. Events go to the shared events.raw.v1 (workers start at its end).
 *
 *   npx tsx services/ingest-api/scripts/load.ts [seconds=10] [connections=32] [KEY=value api env ...]
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { stackEnv } from "@crm/config";
import { freePort, ServiceProcess } from "@crm/process";
import { createBusiness } from "@crm/testing";
import autocannon from "autocannon";
import pg from "pg";
import { hashIngestKey } from "../src/auth.ts";

const seconds = Number(process.argv[2] ?? 10);
const connections = Number(process.argv[3] ?? 32);
const apiEnv = Object.fromEntries(
  process.argv.slice(4).map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
);
const env = stackEnv();
const admin = new pg.Pool({ connectionString: env.DATABASE_ADMIN_URL, max: 1 });
const { businessId } = await createBusiness(admin);
const key = `ik_${randomBytes(32).toString("base64url")}`;
await admin.query("INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, $2, 'load')", [
  businessId,
  hashIngestKey(key),
]);
await admin.end();

const port = await freePort();
const api = new ServiceProcess({
  name: "ingest-api",
  entry: process.env.API_ENTRY ?? "services/ingest-api/src/main.ts",
  env: {
    INGEST_PORT: String(port),
    SEGMENT_PORT: "0",
    LOG_LEVEL: "warn",
    RATE_LIMIT_KEY_DEFAULT_PER_SEC: "10000000",
    ...apiEnv,
  },
  healthUrl: `http://127.0.0.1:${port}/readyz`,
  output: "inherit",
  // PROFILE_DIR=<dir>: the API runs under --cpu-prof and writes its profile there when it exits.
  cpuProfileDir: process.env.PROFILE_DIR,
});
await api.start();
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));
const apiPid = api.pid ?? 0;
const probe = await fetch(`http://127.0.0.1:${port}/v1/track`, {
  method: "POST",
  headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
  body: JSON.stringify({ type: "probe", contact: { email: "p@load.example" } }),
});
console.log(`probe ${probe.status} ${await probe.text()} (api pid ${apiPid})`);
const cpuSeconds = () => {
  if (!apiPid) return 0;
  const stat = readFileSync(`/proc/${apiPid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
};

let n = 0;
const event = () => ({
  type: "load",
  contact: { email: `l${process.pid}.${n++}@load.example`, name: "Load" },
  props: { plan: "pro", amount: 42 },
});

let keys = 0;
const newKey = () => `load-${process.pid}-${keys++}`;

async function run(name: string, duration: number) {
  const keyed = name.endsWith("-keyed");
  const mode = name.replace(/-keyed$/, "") as "track" | "batch" | "paced";
  const cpu0 = cpuSeconds();
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: mode === "paced" ? 50 : mode === "batch" ? 8 : connections,
    ...(mode === "paced" ? { overallRate: 1_000 } : {}),
    duration,
    requests: [
      {
        method: "POST",
        path: mode === "batch" ? "/v1/batch" : "/v1/track",
        setupRequest: (req) => ({
          ...req,
          headers: {
            authorization: `Bearer ${key}`,
            "content-type": "application/json",
            ...(keyed && mode !== "batch" ? { "idempotency-key": newKey() } : {}),
          },
          body: JSON.stringify(
            mode === "batch"
              ? {
                  events: Array.from({ length: 100 }, () => ({
                    ...event(),
                    ...(keyed ? { idempotency_key: newKey() } : {}),
                  })),
                }
              : event(),
          ),
        }),
      },
    ],
  });
  const ok = result["2xx"];
  const events = ok * (mode === "batch" ? 100 : 1);
  const cpu = cpuSeconds() - cpu0;
  console.log(
    `${name.padEnd(12)} ${(ok / duration).toFixed(0).padStart(6)} req/s  ${(events / duration).toFixed(0).padStart(7)} events/s` +
      `  p50 ${result.latency.p50} p90 ${result.latency.p90} p99 ${result.latency.p99} ms` +
      `  non2xx ${result.non2xx} ${JSON.stringify(result.statusCodeStats)} errors ${result.errors}  api cpu ${((cpu / duration) * 100).toFixed(0)}%` +
      ` = ${((cpu / Math.max(events, 1)) * 1e6).toFixed(0)} us/event`,
  );
}

await run("track", 3); // warm-up
for (const mode of (process.env.MODES ?? "track,batch,paced").split(",")) await run(mode, seconds);
await api.stop();
