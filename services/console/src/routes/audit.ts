import { Hono } from "hono";
import type { ConsoleContext, ConsoleDeps, ConsoleEnvBindings } from "../app.ts";
import { isApi } from "../app.ts";
import { listActions } from "../audit.ts";
import { auditPage } from "../views/audit.ts";

/** The audit trail: every reveal, replay and discard (who, when, what), the viewer's businesses only. */
export function auditRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();
  const list = async (c: ConsoleContext) => {
    const entries = await listActions(deps.db, c.get("viewer"), { limit: 300 });
    if (isApi(c)) return c.json({ ok: true, entries });
    return c.html(auditPage({ viewer: c.get("viewer"), csrf: c.get("csrf"), entries }));
  };
  app.get("/audit", list);
  app.get("/api/audit", list);
  return app;
}
