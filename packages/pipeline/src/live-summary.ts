import type { ServiceProcess } from "@crm/process";

interface Totals {
  at: number;
  accepted: number;
  applied: number;
  lag: number;
  refused: number;
  serverErrors: number;
  deadLettered: number;
  retries: number;
  crashes: number;
}

/**
 * The services' counters, every few seconds, as one compact line: events accepted and applied per second, the
 * workers' consumer lag, refusals (4xx) and trouble (5xx, dead-lettered, retried, crashed) since the start. On a
 * terminal the line is rewritten in place; elsewhere a line is printed when it differs from the last one.
 * The services' own logs are in their files, not here.
 */
export function startLiveSummary(options: {
  api: ServiceProcess;
  workers: ServiceProcess[];
  intervalMs?: number;
}): { stop: () => void } {
  const tty = process.stdout.isTTY === true;
  const intervalMs = options.intervalMs ?? (tty ? 2_000 : 10_000);
  let previous: Totals | undefined;
  let lastPrinted = "";
  let busy = false;

  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      const totals = await readTotals(options.api, options.workers);
      if (previous) {
        const line = formatLine(previous, totals);
        if (tty) process.stdout.write(`\r\x1b[2K${line}`);
        else if (line !== lastPrinted)
          console.log(`[live ${new Date().toISOString().slice(11, 19)}] ${line}`);
        lastPrinted = line;
      }
      previous = totals;
    } finally {
      busy = false;
    }
  };
  void tick();
  const timer = setInterval(() => void tick(), intervalMs);
  return {
    stop: () => {
      clearInterval(timer);
      if (tty && lastPrinted) process.stdout.write("\n");
    },
  };
}

function formatLine(before: Totals, now: Totals): string {
  const seconds = Math.max(0.001, (now.at - before.at) / 1000);
  const rate = (key: "accepted" | "applied") => ((now[key] - before[key]) / seconds).toFixed(1);
  return (
    `accepted ${rate("accepted")}/s  applied ${rate("applied")}/s  lag ${now.lag}` +
    ` | 4xx ${now.refused}  5xx ${now.serverErrors}  dead-lettered ${now.deadLettered}` +
    `  retried ${now.retries}  crashed ${now.crashes}`
  );
}

/** A service's /metrics text, or "" when it does not answer. */
function scrape(service: ServiceProcess): Promise<string> {
  return fetch(`${service.url}/metrics`, { signal: AbortSignal.timeout(1_000) }).then(
    (res) => res.text(),
    () => "",
  );
}

/** Messages on events.raw.v1 the workers have not committed yet, as of their last batch. */
export async function workersLag(workers: ServiceProcess[]): Promise<number> {
  return metricTotal(await Promise.all(workers.map(scrape)), "resolver_consumer_lag");
}

async function readTotals(api: ServiceProcess, workers: ServiceProcess[]): Promise<Totals> {
  const [apiText, ...workerTexts] = await Promise.all([api, ...workers].map(scrape));
  const fromApi = (name: string, labels?: RegExp) => metricTotal([apiText ?? ""], name, labels);
  const fromWorkers = (name: string) => metricTotal(workerTexts, name);
  return {
    at: Date.now(),
    accepted: fromApi("ingest_events_total", /outcome="accepted"/),
    refused: fromApi("ingest_http_requests_total", /status="4\d\d"/),
    serverErrors: fromApi("ingest_http_requests_total", /status="5\d\d"/),
    applied: fromWorkers("resolver_events_applied_total"),
    lag: fromWorkers("resolver_consumer_lag"),
    deadLettered: fromWorkers("resolver_dlq_total"),
    retries: fromWorkers("resolver_retries_total"),
    crashes: [api, ...workers].reduce((sum, service) => sum + service.unexpectedExits.length, 0),
  };
}

/** The sum of every sample of `name` in Prometheus text expositions, optionally only those whose labels match. */
export function metricTotal(texts: string[], name: string, labels?: RegExp): number {
  let total = 0;
  for (const text of texts) {
    for (const line of text.split("\n")) {
      if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
      if (labels && !labels.test(line.slice(name.length, line.lastIndexOf(" ")))) continue;
      total += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
    }
  }
  return total;
}
