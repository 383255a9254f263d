import { Hono } from "hono";
import { z } from "zod";
import { type ConsoleContext, type ConsoleDeps, type ConsoleEnvBindings, httpError, isApi } from "../app.ts";
import { recordAction } from "../audit.ts";
import { contactStory, isUuid, searchContacts } from "../contact-story.ts";
import { type Reveal, revealOf, storyJson } from "../views/contact-json.ts";
import { contactPage, searchPage } from "../views/contacts.ts";

const RevealForm = z.object({ field: z.enum(["email", "phone", "name", "all"]) });

/** Contact search and the contact card (issue 19.5); reveals are POSTs, each recorded. */
export function contactRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();

  const search = async (c: ConsoleContext) => {
    const raw = c.req.query("q") ?? "";
    if (raw.length > 320) throw httpError(400, "invalid_request", "q: at most 320 characters");
    const viewer = c.get("viewer");
    const hits = raw.trim() ? await searchContacts(deps.db, viewer, raw) : [];
    if (isApi(c)) return c.json({ ok: true, query: raw, hits });
    return c.html(searchPage({ viewer, csrf: c.get("csrf"), query: raw, hits }));
  };
  app.get("/contacts", search);
  app.get("/api/contacts", search);

  const show = async (c: ConsoleContext, reveal: Reveal) => {
    const id = c.req.param("id") ?? "";
    const viewer = c.get("viewer");
    // Another business's contact and no contact at all look the same: 404.
    const story = isUuid(id) ? await contactStory(deps.db, viewer, id) : undefined;
    if (!story) throw httpError(404, "not_found", "no such contact");
    if (isApi(c)) return c.json({ ok: true, ...storyJson(story, reveal) });
    return c.html(contactPage({ viewer, csrf: c.get("csrf"), story, reveal }));
  };
  app.get("/contacts/:id", (c) => show(c, revealOf(undefined)));
  app.get("/api/contacts/:id", (c) => show(c, revealOf(undefined)));

  const reveal = async (c: ConsoleContext) => {
    const id = c.req.param("id") ?? "";
    const body = isApi(c)
      ? await c.req.json().catch(() => {
          throw httpError(400, "invalid_request", "body must be JSON");
        })
      : await c.req.parseBody({ all: true });
    const parsed = RevealForm.safeParse(body);
    if (!parsed.success) throw httpError(400, "invalid_request", "field: one of email, phone, name, all");
    const viewer = c.get("viewer");
    const story = isUuid(id) ? await contactStory(deps.db, viewer, id) : undefined;
    if (!story) throw httpError(404, "not_found", "no such contact");
    await recordAction(deps.db, viewer, {
      action: "reveal",
      businessId: story.contact.business_id,
      contactId: story.contact.id,
      // the contact is the contact_id column (forgotten when the contact is erased), not part of the text
      target: `reveal:${parsed.data.field}`,
      detail: { field: parsed.data.field },
    });
    const shown = revealOf(parsed.data.field);
    if (isApi(c)) return c.json({ ok: true, ...storyJson(story, shown) });
    return c.html(contactPage({ viewer, csrf: c.get("csrf"), story, reveal: shown }));
  };
  app.post("/contacts/:id/reveal", reveal);
  app.post("/api/contacts/:id/reveal", reveal);

  return app;
}
