import { html, raw } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";
import type { Viewer } from "../access.ts";

export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

// One small stylesheet: readable at 1280 px, a single column on a phone, visible focus for keyboard users.
const CSS = `
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d5dae0;--bg:#fff;--accent:#0b5cad;--bad:#b42318;--ok:#067647;--warn:#b54708}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,summary:focus-visible{outline:3px solid #f5a524;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:6px;z-index:2}
header{display:flex;flex-wrap:wrap;gap:4px 18px;align-items:center;padding:10px 18px;border-bottom:1px solid var(--line);background:#f6f8fa}
header strong{margin-right:8px}header nav{display:flex;flex-wrap:wrap;gap:4px 14px}header nav a[aria-current=page]{font-weight:700;text-decoration:none;color:var(--fg)}
header .who{margin-left:auto;color:var(--muted);display:flex;gap:8px;align-items:center}
main{padding:16px 18px;max-width:1240px;margin:0 auto}h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;background:#f6f8fa}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}pre{white-space:pre-wrap;word-break:break-all;margin:0;max-height:18em;overflow:auto;background:#f6f8fa;padding:6px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px}.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.big{font-size:1.6rem;font-weight:700;font-variant-numeric:tabular-nums}.muted{color:var(--muted)}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}
form.inline{display:inline}input,select,button{font:inherit;padding:5px 8px;border:1px solid var(--line);border-radius:4px}
button{background:var(--accent);color:#fff;border-color:var(--accent);cursor:pointer}button.secondary{background:#fff;color:var(--accent)}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:end}.row label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted)}
.notice{border-left:4px solid var(--accent);background:#eef5fc;padding:8px 12px;margin:0 0 12px}.error{border-left-color:var(--bad);background:#fdf0ef}
svg.chart{width:100%;height:auto;max-height:170px;background:#fbfcfd;border:1px solid var(--line)}
.legend span{margin-right:12px}.legend i{display:inline-block;width:12px;height:3px;vertical-align:middle;margin-right:4px}
@media (max-width:700px){main{padding:10px}th,td{padding:4px 5px}header .who{margin-left:0}table.stack thead{display:none}table.stack tr{display:block;border-bottom:2px solid var(--line)}table.stack td{display:block;border:0}table.stack td[data-label]::before{content:attr(data-label);display:block;font-size:.8rem;color:var(--muted)}}
`;

// On a phone a table.stack shows one cell per line; each cell is labelled with its column's header.
const LABEL_CELLS = `document.querySelectorAll('table.stack').forEach(function(t){var h=[].map.call(t.querySelectorAll('thead th'),function(th){return th.textContent});
t.querySelectorAll('tbody tr').forEach(function(tr){[].forEach.call(tr.children,function(td,i){if(h[i])td.setAttribute('data-label',h[i])})})});`;

const PAGES = [
  ["/", "Overview"],
  ["/topics", "Topics"],
  ["/dead-letters", "Dead letters"],
  ["/contacts", "Contacts"],
  ["/audit", "Audit"],
] as const;

/** A full page: navigation, who is signed in, and the CSRF token for the forms and the polling script. */
export function page(options: {
  title: string;
  path: string;
  viewer?: Viewer | undefined;
  csrf?: string | undefined;
  body: Html;
  script?: string;
}): Html {
  const { viewer } = options;
  const current = (href: string) =>
    href === "/" ? options.path === "/" : options.path === href || options.path.startsWith(`${href}/`);
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${options.csrf ?? ""}">
<title>${options.title} · CRM ops console</title>
<style>${raw(CSS)}</style>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header>
<strong>CRM ops console</strong>
${
  viewer
    ? html`<nav aria-label="Main">${PAGES.map(
        ([href, label]) =>
          html`<a href="${href}" ${current(href) ? raw('aria-current="page"') : ""}>${label}</a>`,
      )}</nav>
<span class="who">${viewer.principal.kind === "operator" ? "operator" : html`business user <code>${viewer.principal.userId.slice(0, 8)}</code> · ${viewer.businesses?.length ?? 0} business(es)`}
<form class="inline" method="post" action="/sign-out"><input type="hidden" name="_csrf" value="${options.csrf ?? ""}"><button class="secondary" type="submit">Sign out</button></form></span>`
    : ""
}
</header>
<main id="main">
${options.body}
</main>
<script>${raw(LABEL_CELLS)}</script>
${options.script ? html`<script>${raw(options.script)}</script>` : ""}
</body>
</html>`;
}

/** The hidden CSRF field of a form. */
export const csrfField = (csrf: string | undefined) =>
  html`<input type="hidden" name="_csrf" value="${csrf ?? ""}">`;

/** JSON for a <pre>, shortened. */
export function json(value: unknown, max = 4_000): string {
  const text = JSON.stringify(value, null, 2) ?? "null";
  return text.length > max ? `${text.slice(0, max)}\n…` : text;
}

export const when = (at: Date | string | null | undefined) =>
  at
    ? new Date(at)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z")
    : "";
