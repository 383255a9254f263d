import { html } from "hono/html";
import type { Viewer } from "../access.ts";
import type { AuditEntry } from "../audit.ts";
import { json, page, when } from "./layout.ts";

export function auditPage(options: { viewer: Viewer; csrf: string | undefined; entries: AuditEntry[] }) {
  return page({
    title: "Audit",
    path: "/audit",
    viewer: options.viewer,
    csrf: options.csrf,
    body: html`<h1>Audit trail</h1>
<p class="muted">Every PII reveal and every dead-letter replay or discard made through the console. Revealed values are never stored here.</p>
${
  options.entries.length === 0
    ? html`<p class="notice">Nothing recorded yet.</p>`
    : html`<div class="scroll"><table class="stack" id="audit"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>What</th><th>Business</th><th>Detail</th></tr></thead><tbody>
${options.entries.map(
  (e) => html`<tr><td>${when(e.at)}</td><td><code>${e.actor}</code></td><td>${e.action}</td>
<td>${e.contact_id ? html`<a href="/contacts/${e.contact_id}"><code>${e.target}</code></a>` : html`<code>${e.target}</code>`}</td>
<td><code>${e.business_id?.slice(0, 8) ?? ""}</code></td><td><pre>${json(e.detail, 600)}</pre></td></tr>`,
)}</tbody></table></div>`
}`,
  });
}
