import { html } from "hono/html";
import type { Viewer } from "../access.ts";
import type { ShownMessage, TopicInfo } from "../messages.ts";
import { json, page, when } from "./layout.ts";

const retention = (ms: string | undefined) => {
  if (ms === undefined) return "?";
  const n = Number(ms);
  if (n < 0) return "forever";
  return n % 86_400_000 === 0
    ? `${n / 86_400_000} d`
    : n % 3_600_000 === 0
      ? `${n / 3_600_000} h`
      : `${n} ms`;
};

export function topicsPage(options: { viewer: Viewer; csrf: string | undefined; topics: TopicInfo[] }) {
  return page({
    title: "Topics",
    path: "/topics",
    viewer: options.viewer,
    csrf: options.csrf,
    body: html`<h1>Topics</h1>
<div class="scroll"><table id="topics"><thead><tr><th>Topic</th><th class="num">Partitions</th><th class="num">Messages kept</th><th>Retention</th><th>Cleanup</th><th>Offsets (partition: first–next)</th></tr></thead><tbody>
${options.topics.map(
  (
    t,
  ) => html`<tr><td><a href="/topics/${encodeURIComponent(t.topic)}">${t.topic}</a></td><td class="num">${t.partitions.length}</td><td class="num">${t.messages}</td>
<td>${retention(t.retentionMs)}</td><td>${t.cleanupPolicy ?? "?"}</td>
<td><details><summary>${t.partitions.length} partitions</summary><code style="white-space:pre">${t.partitions.map((p) => `${p.partition}: ${p.low}–${p.high}`).join("\n")}</code></details></td></tr>`,
)}</tbody></table></div>`,
  });
}

export function topicPage(options: {
  viewer: Viewer;
  csrf: string | undefined;
  topic: string;
  info: TopicInfo | undefined;
  query: {
    partition: number | undefined;
    offset: string | undefined;
    key: string | undefined;
    limit: number;
  };
  messages: ShownMessage[];
}) {
  const { query, topic } = options;
  return page({
    title: topic,
    path: "/topics",
    viewer: options.viewer,
    csrf: options.csrf,
    body: html`<p><a href="/topics">← Topics</a></p><h1>${topic}</h1>
<form method="get" class="row" action="/topics/${encodeURIComponent(topic)}">
<label for="partition">Partition<select id="partition" name="partition"><option value="">all</option>
${(options.info?.partitions ?? []).map((p) => html`<option value="${p.partition}" ${query.partition === p.partition ? "selected" : ""}>${p.partition} (${p.low}–${p.high})</option>`)}
</select></label>
<label for="offset">From offset<input id="offset" name="offset" inputmode="numeric" value="${query.offset ?? ""}" size="10" placeholder="latest"></label>
<label for="key">Key (exact)<input id="key" name="key" value="${query.key ?? ""}" size="36"></label>
<label for="limit">Per partition<input id="limit" name="limit" inputmode="numeric" value="${query.limit}" size="4"></label>
<button type="submit">Show</button></form>
<p class="muted">Values are decoded (schema-registry framing: magic byte 0 and schema id) and PII is masked. ${options.viewer.businesses ? "Only messages of your businesses are shown." : ""}</p>
${
  options.messages.length === 0
    ? html`<p class="notice">No messages in that range.</p>`
    : html`<div class="scroll"><table class="stack" id="messages"><thead><tr><th>Position</th><th>Key and headers</th><th>Value</th></tr></thead><tbody>
${options.messages.map(
  (
    m,
  ) => html`<tr><td><code>p${m.partition}@${m.offset}</code><br>${when(m.timestamp)}${m.schemaId !== undefined ? html`<br><span class="muted">schema id ${m.schemaId}</span>` : ""}</td>
<td><code>${m.key ?? "(no key)"}</code><pre>${json(m.headers, 1_500)}</pre></td>
<td><span class="muted">${m.encoding}</span><pre>${typeof m.value === "string" ? m.value.slice(0, 4_000) : json(m.value)}</pre></td></tr>`,
)}</tbody></table></div>`
}`,
  });
}
