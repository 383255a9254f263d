import { html, raw } from "hono/html";
import type { Viewer } from "../access.ts";
import type { RatePoint, Stage } from "../rates.ts";
import type { OverviewData } from "../routes/overview.ts";
import { page } from "./layout.ts";

const COLORS: Record<Stage, string> = { accepted: "#0b5cad", applied: "#067647", published: "#b54708" };
const LABELS: Record<Stage, string> = {
  accepted: "accepted (ingest-api)",
  applied: "applied (resolver-worker)",
  published: "published (contact.updated.v1)",
};

const rate = (value: number | null | undefined) =>
  value === null || value === undefined ? "–" : value.toFixed(1);

/** An inline SVG line chart of the three stages over the last hour (x: time, y: events/s). */
export function rateChart(points: RatePoint[], now = Date.now()): string {
  const width = 720;
  const height = 160;
  const pad = { left: 44, right: 8, top: 10, bottom: 22 };
  const span = 3_600_000;
  const max = Math.max(
    1,
    ...points.flatMap((p) => [p.accepted ?? 0, p.applied ?? 0, p.published ?? 0]).filter(Number.isFinite),
  );
  const x = (at: number) => pad.left + ((at - (now - span)) / span) * (width - pad.left - pad.right);
  const y = (v: number) => pad.top + (1 - v / max) * (height - pad.top - pad.bottom);
  const lines = (["accepted", "applied", "published"] as const).map((stage) => {
    const segments: string[] = [];
    let current: string[] = [];
    for (const p of points) {
      const v = p[stage];
      if (v === null || p.at < now - span) {
        if (current.length) segments.push(current.join(" "));
        current = [];
        continue;
      }
      current.push(`${x(p.at).toFixed(1)},${y(v).toFixed(1)}`);
    }
    if (current.length) segments.push(current.join(" "));
    return segments
      .map((s) =>
        s.includes(" ")
          ? `<polyline fill="none" stroke="${COLORS[stage]}" stroke-width="2" points="${s}"/>`
          : `<circle r="2" fill="${COLORS[stage]}" cx="${s.split(",")[0]}" cy="${s.split(",")[1]}"/>`,
      )
      .join("");
  });
  const ticks = [0, 0.5, 1]
    .map((f) => {
      const v = max * f;
      return `<text x="${pad.left - 4}" y="${y(v) + 4}" text-anchor="end" font-size="11" fill="#5b6470">${v < 10 ? v.toFixed(1) : Math.round(v)}</text><line x1="${pad.left}" x2="${width - pad.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e8ec"/>`;
    })
    .join("");
  const xLabels = [60, 45, 30, 15, 0]
    .map(
      (m) =>
        `<text x="${x(now - m * 60_000)}" y="${height - 6}" text-anchor="middle" font-size="11" fill="#5b6470">${m === 0 ? "now" : `-${m} min`}</text>`,
    )
    .join("");
  const summary = points.length
    ? `events per second over the last hour; latest: ${(["accepted", "applied", "published"] as const).map((s) => `${s} ${rate(points.at(-1)?.[s])}`).join(", ")}`
    : "no samples yet";
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" role="img" aria-label="${summary}">${ticks}${xLabels}${lines.join("")}</svg>`;
}

const stateClass = (state: string) =>
  state === "RUNNING" || state === "up" || state === "reserved"
    ? "ok"
    : state === "not running"
      ? "muted"
      : "bad";

/** The part of the overview that the page polls and replaces. */
export function overviewLive(data: OverviewData) {
  if (data.scope === "business") {
    return html`<div class="cards"><div class="card"><div class="muted">Dead letters of your businesses</div>
<div class="big" id="dlq-size">${data.deadLetters}</div><a href="/dead-letters">Open the dead letters</a></div>
<div class="card"><div class="muted">Pipeline rates, lag and health</div><p>Shown to operators only: they span every business.</p></div></div>`;
  }
  const latest = data.latest;
  return html`<div class="cards">
${(["accepted", "applied", "published"] as const).map(
  (stage) =>
    html`<div class="card"><div class="muted">${LABELS[stage]}</div><div class="big" data-rate="${stage}">${rate(latest?.[stage])}</div><div class="muted">events/s</div></div>`,
)}
<div class="card"><div class="muted">Dead letters (${data.dlqTopic})</div><div class="big" id="dlq-size">${data.deadLetters}</div><a href="/dead-letters">Open</a></div>
</div>
<h2>Events per second, last hour</h2>
<p class="legend">${(["accepted", "applied", "published"] as const).map((s) => html`<span><i style="background:${COLORS[s]}"></i>${LABELS[s]}</span>`)}</p>
${raw(rateChart(data.rates))}
<div class="cards">
<section class="card" aria-labelledby="h-health"><h2 id="h-health">Services</h2><table><tbody>
${data.services.map((s) => html`<tr><th>${s.name}</th><td class="${stateClass(s.state)}">${s.state}</td><td class="muted">${s.url}</td></tr>`)}
</tbody></table></section>
<section class="card" aria-labelledby="h-connector"><h2 id="h-connector">Debezium connector</h2>
<p>Connector: <strong class="${stateClass(data.connector?.state ?? "")}">${data.connector?.state ?? "unknown"}</strong>${data.connector?.trace ? html`<br><span class="bad">${data.connector.trace}</span>` : ""}</p>
<table><tbody>${(data.connector?.tasks ?? []).map((t) => html`<tr><th>task ${t.id}</th><td class="${stateClass(t.state)}">${t.state}</td><td class="bad">${t.trace ?? ""}</td></tr>`)}</tbody></table>
<h2>Replication slots</h2>
${
  data.slots.length === 0
    ? html`<p class="muted">No replication slot.</p>`
    : html`<table><thead><tr><th>Slot</th><th>Active</th><th>wal_status</th><th class="num">Lag</th><th class="num">Retained</th></tr></thead><tbody>
${data.slots.map((s) => html`<tr><td>${s.slot_name}</td><td>${s.active ? "yes" : html`<span class="bad">no</span>`}</td><td class="${stateClass(s.wal_status ?? "")}">${s.wal_status ?? "?"}</td><td class="num">${bytes(s.lag_bytes)}</td><td class="num">${bytes(s.retained_bytes)}</td></tr>`)}
</tbody></table>`
}</section>
</div>
<h2>Consumer lag</h2>
${
  data.lag.length === 0
    ? html`<p class="muted">No consumer group with committed offsets.</p>`
    : html`<div class="scroll"><table id="lag"><thead><tr><th>Group</th><th>Topic</th><th class="num">Total lag</th><th>Per partition (partition: lag)</th></tr></thead><tbody>
${data.lag.map(
  (g) => html`<tr><td><code>${g.groupId}</code></td><td>${g.topic}</td><td class="num">${g.total}</td>
<td><code>${g.partitions.map((p) => `${p.partition}:${p.lag}`).join("  ")}</code></td></tr>`,
)}</tbody></table></div>`
}`;
}

function bytes(value: string | null): string {
  if (value === null) return "?";
  const n = Number(value);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// Short polling: the live part is fetched as HTML every 5 s and swapped in (no framework, no build step).
const POLL = `(function(){var box=document.getElementById('live');var busy=false;setInterval(function(){
if(busy||document.hidden)return;busy=true;fetch('/overview/live',{credentials:'same-origin'}).then(function(r){return r.ok?r.text():null})
.then(function(t){if(t!==null)box.innerHTML=t}).catch(function(){}).finally(function(){busy=false})},5000)})();`;

export function overviewPage(options: { viewer: Viewer; csrf: string | undefined; data: OverviewData }) {
  return page({
    title: "Overview",
    path: "/",
    viewer: options.viewer,
    csrf: options.csrf,
    body: html`<h1>Overview</h1><div id="live" aria-live="off">${overviewLive(options.data)}</div>`,
    script: POLL,
  });
}
