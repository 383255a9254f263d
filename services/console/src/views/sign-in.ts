import { html } from "hono/html";
import { page } from "./layout.ts";

export function signInPage(options: { next: string; error?: string }) {
  return page({
    title: "Sign in",
    path: "/sign-in",
    body: html`<h1>Sign in</h1>
${options.error ? html`<p class="notice error" role="alert">${options.error}</p>` : ""}
<form method="post" action="/sign-in" class="card" style="max-width:560px">
<input type="hidden" name="next" value="${options.next}">
<p><label for="token">Operator token or user token (JWT)</label><br>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus style="width:100%"></p>
<p class="muted">Operators: <code>CONSOLE_OPERATOR_TOKEN</code> from <code>.stack/env</code> (printed by <code>npm start</code>).
Business owners and team members: your usual access token; you will see only your businesses.</p>
<button type="submit">Sign in</button>
</form>`,
  });
}
