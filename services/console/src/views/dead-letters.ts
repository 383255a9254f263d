import { html } from "hono/html";
import type { Viewer } from "../access.ts";
import { maskKey } from "../mask.ts";
import type { DeadLetterRow } from "../routes/dead-letters.ts";
import { csrfField, page, when } from "./layout.ts";

const STATUSES = ["open", "replayed", "discarded", "all"] as const;

export function deadLettersPage(options: {
  viewer: Viewer;
  csrf: string | undefined;
  status: string;
  rows: DeadLetterRow[];
  total: number;
  loaded: boolean;
  dlqTopic: string;
  done: string | undefined;
}) {
  const { rows, csrf } = options;
  return page({
    title: "Dead letters",
    path: "/dead-letters",
    viewer: options.viewer,
    csrf,
    body: html`<h1>Dead letters <span class="muted">(${options.dlqTopic})</span></h1>
${options.done ? html`<p class="notice" role="status">${options.done.slice(0, 40)}. Recorded in the audit trail.</p>` : ""}
<p class="muted">A replay sends the original bytes back to the raw topic with the same event id: the worker applies an
event at most once, so replaying one that was applied changes nothing, and one that fails again comes back here as a new
dead letter. ${options.loaded ? "" : "Still reading the topic…"}</p>
<nav aria-label="Filter" class="row">${STATUSES.map(
      (s) =>
        html`<a href="/dead-letters?status=${s}" ${s === options.status ? html`aria-current="page"` : ""}>${s}</a>`,
    )}<span class="muted">${options.total} in total visible to you</span></nav>
${
  rows.length === 0
    ? html`<p class="notice">No ${options.status === "all" ? "" : options.status} dead letters.</p>`
    : html`<form method="post" id="dlq-form">${csrfField(csrf)}
<div class="row" style="margin:8px 0"><button type="submit" formaction="/dead-letters/replay">Replay selected</button>
<button type="submit" class="secondary" formaction="/dead-letters/discard">Discard selected</button></div>
<div class="scroll"><table class="stack" id="dead-letters"><thead><tr><th><span class="muted">Pick</span></th><th>Dead-lettered</th><th>Reason</th><th class="num">Attempts</th><th>Source</th><th>Event</th><th>Status</th></tr></thead><tbody>
${rows.map(
  ({ entry, status, last, replayOf }) => html`<tr data-id="${entry.id}" data-event="${entry.eventId ?? ""}">
<td><input type="checkbox" name="ids" value="${entry.id}" aria-label="select ${entry.id}"></td>
<td>${when(entry.at)}<br><code>p${entry.partition}@${entry.offset}</code></td>
<td><strong>${entry.errorClass}</strong> <span class="muted">${entry.errorKind}</span><br>${entry.reason.slice(0, 300)}</td>
<td class="num">${entry.attempts}</td>
<td><code>${entry.sourceTopic} p${entry.sourcePartition}@${entry.sourceOffset}</code>${replayOf ? html`<br><span class="muted">replay of ${replayOf.split(":").slice(-2).join("@")}</span>` : ""}</td>
<td>${entry.eventType ?? html`<span class="muted">undecodable</span>`}<br><code>${entry.eventId ?? maskKey(entry.key)}</code>${entry.businessId ? html`<br><span class="muted">business ${entry.businessId.slice(0, 8)}</span>` : ""}</td>
<td class="status">${status}${last ? html`<br><span class="muted">${last.actor}, ${when(last.at)}</span>` : ""}</td></tr>`,
)}</tbody></table></div></form>`
}`,
  });
}
