import { createServer, type Server } from "node:http";

/** What a readiness probe answers: `ok` decides 200 or 503, the rest explains it. */
export interface Readiness {
  ok: boolean;
  [part: string]: unknown;
}

/**
 * The health listener every background service has (SPEC 3): `GET /healthz` (the process runs), `/readyz` (200 or
 * 503 with the probe's parts) and `/metrics` (Prometheus text). Anything else is a 404 in the error shape.
 */
export function startHealthServer(options: {
  port: number;
  host: string;
  readiness: () => Promise<Readiness>;
  metrics: () => Promise<{ contentType: string; body: string }>;
}): Server {
  const server = createServer(async (req, res) => {
    const json = (status: number, body: unknown) => {
      res.statusCode = status;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(body));
    };
    try {
      if (req.url === "/metrics") {
        const { contentType, body } = await options.metrics();
        res.setHeader("content-type", contentType);
        res.end(body);
      } else if (req.url === "/healthz") {
        json(200, { ok: true });
      } else if (req.url === "/readyz") {
        const state = await options.readiness();
        json(state.ok ? 200 : 503, state);
      } else {
        json(404, { ok: false, error: { code: "not_found", message: "GET /healthz, /readyz or /metrics" } });
      }
    } catch (error) {
      json(500, { ok: false, error: { code: "internal", message: (error as Error).message } });
    }
  });
  server.listen(options.port, options.host);
  return server;
}
