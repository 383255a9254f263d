import { Hono } from "hono";
import { z } from "zod";
import { maySee } from "../access.ts";
import { type ConsoleContext, type ConsoleDeps, type ConsoleEnvBindings, httpError, isApi } from "../app.ts";
import { type AuditEntry, listActions, recordAction } from "../audit.ts";
import { type DeadLetter, deadLetterValue, replayDeadLetter } from "../dead-letters.ts";
import { maskDeep, maskKey } from "../mask.ts";
import { deadLettersPage } from "../views/dead-letters.ts";

const Status = z.enum(["open", "replayed", "discarded", "all"]).catch("open");
const ActionBody = z.object({ ids: z.array(z.string().min(1).max(300)).min(1).max(200) });

/** The state a dead letter is in: the latest replay or discard recorded for it, else open. */
export interface DeadLetterRow {
  entry: DeadLetter;
  status: "open" | "replayed" | "discarded";
  last: AuditEntry | undefined;
  /** the dead letter whose replay this one is (its source position is where that replay landed) */
  replayOf: string | undefined;
}

/** Dead letters (issue 19.4): list with reason, attempts, source offset; replay or discard, each recorded. */
export function deadLetterRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();

  async function rows(c: ConsoleContext): Promise<DeadLetterRow[]> {
    const viewer = c.get("viewer");
    const visible = deps.deadLetters.list().filter((entry) => maySee(viewer, entry.businessId));
    const actions = visible.length
      ? await listActions(deps.db, viewer, { targets: visible.map((e) => e.id), limit: 1000 })
      : [];
    const latest = new Map<string, AuditEntry>();
    // raw topic position a replay landed at -> the dead letter replayed
    const replayed = new Map<string, string>();
    for (const action of actions) {
      if (!latest.has(action.target)) latest.set(action.target, action);
      if (action.action === "dlq_replay" && typeof action.detail.to === "string") {
        replayed.set(action.detail.to, action.target);
      }
    }
    return visible.map((entry) => {
      const last = latest.get(entry.id);
      const replayOf =
        entry.replayOf ?? replayed.get(`${entry.sourceTopic}:${entry.sourcePartition}:${entry.sourceOffset}`);
      const status =
        last?.action === "dlq_replay" ? "replayed" : last?.action === "dlq_discard" ? "discarded" : "open";
      return { entry, status, last, replayOf };
    });
  }

  const list = async (c: ConsoleContext) => {
    const status = Status.parse(c.req.query("status"));
    const all = await rows(c);
    const shown = status === "all" ? all : all.filter((row) => row.status === status);
    if (isApi(c)) {
      return c.json({
        ok: true,
        total: all.length,
        dead_letters: shown.slice(0, 500).map(({ entry, status, last, replayOf }) => ({
          id: entry.id,
          partition: entry.partition,
          offset: entry.offset,
          at: entry.at,
          key: maskKey(entry.key),
          reason: entry.reason,
          error_class: entry.errorClass,
          error_kind: entry.errorKind,
          attempts: entry.attempts,
          source: { topic: entry.sourceTopic, partition: entry.sourcePartition, offset: entry.sourceOffset },
          replay_of: replayOf,
          event_id: entry.eventId,
          event_type: entry.eventType,
          business_id: entry.businessId,
          status,
          last_action: last ? { action: last.action, actor: last.actor, at: last.at } : undefined,
          value: maskDeep(deadLetterValue(entry)),
        })),
      });
    }
    return c.html(
      deadLettersPage({
        viewer: c.get("viewer"),
        csrf: c.get("csrf"),
        status,
        rows: shown.slice(0, 500),
        total: all.length,
        loaded: deps.deadLetters.loaded,
        dlqTopic: deps.dlqTopic,
        done: c.req.query("done"),
      }),
    );
  };
  app.get("/dead-letters", list);
  app.get("/api/dead-letters", list);

  /** The entries named by `ids` that the viewer may see; an unknown or foreign id is 404, never a hint. */
  async function chosen(c: ConsoleContext): Promise<DeadLetter[]> {
    let ids: unknown;
    if (isApi(c)) {
      const body = await c.req.json().catch(() => {
        throw httpError(400, "invalid_request", "body must be JSON");
      });
      ids = (body as { ids?: unknown } | null)?.ids;
    } else {
      const form = await c.req.parseBody({ all: true });
      ids = form.ids === undefined ? [] : Array.isArray(form.ids) ? form.ids : [form.ids];
    }
    const parsed = ActionBody.safeParse({ ids });
    if (!parsed.success) throw httpError(400, "invalid_request", "ids: 1..200 dead-letter ids");
    const viewer = c.get("viewer");
    return parsed.data.ids.map((id) => {
      const entry = deps.deadLetters.get(id);
      if (!entry || !maySee(viewer, entry.businessId))
        throw httpError(404, "not_found", `no such dead letter: ${id.slice(0, 80)}`);
      return entry;
    });
  }

  const act = (action: "dlq_replay" | "dlq_discard") => async (c: ConsoleContext) => {
    const entries = await chosen(c);
    const viewer = c.get("viewer");
    for (const entry of entries) {
      const landed =
        action === "dlq_replay"
          ? await replayDeadLetter(deps.replays, deps.rawTopic, entry, viewer.actor)
          : undefined;
      await recordAction(deps.db, viewer, {
        action,
        businessId: entry.businessId,
        target: entry.id,
        detail: {
          event_id: entry.eventId ?? null,
          reason: entry.reason.slice(0, 200),
          ...(landed ? { to: `${deps.rawTopic}:${landed.partition}:${landed.offset}` } : {}),
        },
      });
    }
    deps.logger.info({ action, count: entries.length, actor: viewer.principal.kind }, "dead letters handled");
    if (isApi(c)) return c.json({ ok: true, action, ids: entries.map((e) => e.id) });
    const verb = action === "dlq_replay" ? "replayed" : "discarded";
    return c.redirect(`/dead-letters?done=${entries.length}+${verb}`, 303);
  };
  app.post("/dead-letters/replay", act("dlq_replay"));
  app.post("/api/dead-letters/replay", act("dlq_replay"));
  app.post("/dead-letters/discard", act("dlq_discard"));
  app.post("/api/dead-letters/discard", act("dlq_discard"));

  return app;
}
