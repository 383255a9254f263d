import { Hono } from "hono";
import { z } from "zod";
import { maySee } from "../access.ts";
import { type ConsoleContext, type ConsoleDeps, type ConsoleEnvBindings, httpError, isApi } from "../app.ts";
import { describeTopics, readRange, showMessage } from "../messages.ts";
import { topicPage, topicsPage } from "../views/topics.ts";

const Browse = z.object({
  partition: z
    .string()
    .regex(/^\d{1,4}$/)
    .transform(Number)
    .optional()
    .catch(undefined),
  offset: z
    .string()
    .regex(/^\d{1,18}$/)
    .transform((s) => BigInt(s))
    .optional()
    .catch(undefined),
  key: z.string().min(1).max(512).optional().catch(undefined),
  limit: z
    .string()
    .regex(/^\d{1,3}$/)
    .transform((s) => Math.min(Math.max(Number(s), 1), 200))
    .optional()
    .catch(undefined),
});

/**
 * Topics (issue 19.3): partitions, offsets, retention; messages by partition, offset or key, decoded and masked.
 * A business user sees only messages of their businesses (the business_id header, the raw key's prefix, or the
 * value's field); one message at a time is read on demand, never a whole topic.
 */
export function topicRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();
  const known = [...new Set([deps.rawTopic, deps.dlqTopic, ...deps.topics])];
  // One browse at a time: each is a short-lived consumer group, and the machine is small.
  let browsing: Promise<unknown> = Promise.resolve();

  const list = async (c: ConsoleContext) => {
    const topics = await describeTopics(deps.kafka, known);
    if (isApi(c)) return c.json({ ok: true, topics });
    return c.html(topicsPage({ viewer: c.get("viewer"), csrf: c.get("csrf"), topics }));
  };
  app.get("/topics", list);
  app.get("/api/topics", list);

  const browse = async (c: ConsoleContext) => {
    const topic = c.req.param("topic") ?? "";
    if (!known.includes(topic)) throw httpError(404, "not_found", "no such topic");
    const query = Browse.parse({
      partition: c.req.query("partition") || undefined,
      offset: c.req.query("offset") || undefined,
      key: c.req.query("key") || undefined,
      limit: c.req.query("limit") || undefined,
    });
    const viewer = c.get("viewer");
    const limit = query.limit ?? 20;
    const run = browsing.then(() =>
      readRange(deps.kafka, {
        topic,
        partition: query.partition,
        offset: query.offset,
        key: query.key,
        limit,
      }),
    );
    browsing = run.catch(() => {});
    const raw = await run;
    const messages = raw
      .map(({ partition, message }) => showMessage(topic, partition, message))
      .filter((m) => maySee(viewer, m.businessId))
      .slice(-limit * (query.partition === undefined ? 12 : 1));
    if (isApi(c)) return c.json({ ok: true, topic, messages });
    const [info] = await describeTopics(deps.kafka, [topic]);
    return c.html(
      topicPage({
        viewer,
        csrf: c.get("csrf"),
        topic,
        info,
        query: { partition: query.partition, offset: query.offset?.toString(), key: query.key, limit },
        messages,
      }),
    );
  };
  app.get("/topics/:topic", browse);
  app.get("/api/topics/:topic/messages", browse);

  return app;
}
