import { html } from "hono/html";
import type { Viewer } from "../access.ts";
import type { ContactStory, SearchHit } from "../contact-story.ts";
import { maskDeep } from "../mask.ts";
import { type Reveal, shown } from "./contact-json.ts";
import { csrfField, json, page, when } from "./layout.ts";

const searchForm = (query: string) => html`<form method="get" action="/contacts" class="row" role="search">
<label for="q">Email, phone, external id, anonymous id or contact id
<input id="q" name="q" value="${query}" size="44" maxlength="320" autofocus></label>
<button type="submit">Search</button></form>`;

export function searchPage(options: {
  viewer: Viewer;
  csrf: string | undefined;
  query: string;
  hits: SearchHit[];
}) {
  const { query, hits } = options;
  return page({
    title: "Contacts",
    path: "/contacts",
    viewer: options.viewer,
    csrf: options.csrf,
    body: html`<h1>Contacts</h1>
${searchForm(query)}
${
  query.trim()
    ? hits.length === 0
      ? html`<p class="notice">No contact matches that identifier${options.viewer.businesses ? " in your businesses" : ""}.</p>`
      : html`<h2>${hits.length} match${hits.length === 1 ? "" : "es"}</h2><div class="scroll"><table class="stack" id="hits">
<thead><tr><th>Contact</th><th>Business</th><th>Matched by</th></tr></thead><tbody>
${hits.map(
  (hit) =>
    html`<tr><td><a href="/contacts/${hit.contact_id}"><code>${hit.contact_id}</code></a></td><td><code>${hit.business_id}</code></td><td>${hit.matched}</td></tr>`,
)}</tbody></table></div>`
    : html`<p class="muted">Identifiers are normalized as ingest normalizes them (email lowercase, phone E.164).</p>`
}`,
  });
}

const revealButton = (csrf: string | undefined, id: string, field: string, label: string) =>
  html`<form class="inline" method="post" action="/contacts/${id}/reveal">${csrfField(csrf)}<input type="hidden" name="field" value="${field}"><button class="secondary" type="submit">${label}</button></form>`;

export function contactPage(options: {
  viewer: Viewer;
  csrf: string | undefined;
  story: ContactStory;
  reveal: Reveal;
}) {
  const { story, reveal, csrf } = options;
  const c = story.contact;
  const id = c.id;
  const deep = (value: unknown) => json(reveal.size === 3 ? value : maskDeep(value));
  return page({
    title: `Contact ${id.slice(0, 8)}`,
    path: "/contacts",
    viewer: options.viewer,
    csrf,
    body: html`<p><a href="/contacts">← Search</a></p>
<h1>Contact <code>${id}</code></h1>
${c.merged_into ? html`<p class="notice">This contact was merged into <a href="/contacts/${c.merged_into}"><code>${c.merged_into}</code></a>.</p>` : ""}
${reveal.size > 0 ? html`<p class="notice" role="status">Revealed: ${[...reveal].join(", ")}. This reveal is recorded in the audit trail.</p>` : ""}
<div class="cards">
<section class="card" aria-labelledby="fields"><h2 id="fields">Fields</h2>
<table><tbody>
<tr><th>Business</th><td><code>${c.business_id}</code></td></tr>
<tr><th>External id</th><td>${c.external_id ?? ""}</td></tr>
<tr><th>Email</th><td data-pii="email">${shown(reveal, "email", c.email) ?? ""}</td></tr>
<tr><th>Phone</th><td data-pii="phone">${shown(reveal, "phone", c.phone) ?? ""}</td></tr>
<tr><th>Name</th><td data-pii="name">${shown(reveal, "name", c.name) ?? ""}</td></tr>
<tr><th>Version</th><td>${c.version}</td></tr>
<tr><th>First / last seen</th><td>${when(c.first_seen_at)}<br>${when(c.last_seen_at)}</td></tr>
</tbody></table>
<p>${revealButton(csrf, id, "email", "Reveal email")} ${revealButton(csrf, id, "phone", "Reveal phone")} ${revealButton(csrf, id, "name", "Reveal name")} ${revealButton(csrf, id, "all", "Reveal all")}</p>
</section>
<section class="card" aria-labelledby="ids"><h2 id="ids">Identities</h2>
<table id="identities"><thead><tr><th>Type</th><th>Value</th><th>Linked</th></tr></thead><tbody>
${story.identities.map((i) => html`<tr><td>${i.type}</td><td>${shown(reveal, i.type, i.value)}</td><td>${when(i.created_at)}</td></tr>`)}
</tbody></table>
<h2>Traits</h2><pre>${deep(c.traits)}</pre>
</section>
</div>
<h2 id="merges">Merge history</h2>
${
  story.merges.length === 0
    ? html`<p class="muted">No contact was merged into this one.</p>`
    : html`<div class="scroll"><table class="stack" id="merge-history"><thead><tr><th>Merged contact</th><th>Into</th><th>When</th><th>Cause event</th></tr></thead><tbody>
${story.merges.map(
  (
    m,
  ) => html`<tr><td><a href="/contacts/${m.contact_id}"><code>${m.contact_id}</code></a></td><td><code>${m.into.slice(0, 8)}</code></td><td>${when(m.at)}</td>
<td>${m.cause_event_id ? html`<code class="cause">${m.cause_event_id}</code> ${m.cause_type ? html`(${m.cause_type})` : ""}${m.occurred_at ? html`<br><span class="muted">occurred ${when(m.occurred_at)}</span>` : ""}` : html`<span class="muted">unknown (outbox row pruned)</span>`}</td></tr>`,
)}</tbody></table></div>`
}
<h2>Conflicts</h2>
${
  story.conflicts.length === 0
    ? html`<p class="muted">No identity conflict recorded.</p>`
    : html`<div class="scroll"><table class="stack"><thead><tr><th>When</th><th>Identifier</th><th>Reason</th><th>Event</th><th>Other contact</th></tr></thead><tbody>
${story.conflicts.map(
  (
    k,
  ) => html`<tr><td>${when(k.created_at)}</td><td>${k.type}: ${shown(reveal, k.type, k.value)}</td><td>${k.reason}</td><td><code>${k.event_id}</code></td>
<td>${k.other_contact ? html`<a href="/contacts/${k.other_contact}"><code>${k.other_contact.slice(0, 8)}</code></a>` : ""}</td></tr>`,
)}</tbody></table></div>`
}
<h2>Event timeline</h2>
<div class="scroll"><table class="stack" id="timeline"><thead><tr><th>Occurred</th><th>Type</th><th>Event id</th><th>Props</th></tr></thead><tbody>
${story.events.map(
  (e) =>
    html`<tr><td>${when(e.occurred_at)}</td><td>${e.type}</td><td><code>${e.id}</code></td><td><pre>${deep(e.props)}</pre></td></tr>`,
)}</tbody></table></div>
${story.related.map(
  (r) => html`<h2>${r.table}</h2>
${
  r.rows.length === 0
    ? html`<p class="muted">None.</p>`
    : html`<div class="scroll"><table class="stack"><thead><tr>${Object.keys(r.rows[0]!).map((k) => html`<th>${k.replaceAll("_", " ")}</th>`)}</tr></thead><tbody>
${r.rows.map((row) => html`<tr>${Object.values(maskDeep(row) as Record<string, unknown>).map((v) => html`<td>${v instanceof Date ? when(v) : typeof v === "object" && v !== null ? json(v, 300) : String(v ?? "")}</td>`)}</tr>`)}
</tbody></table></div>`
}`,
)}`,
  });
}
