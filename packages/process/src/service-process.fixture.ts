// A tiny service for service-process.test.ts: /healthz answers once FIXTURE_READY_AFTER_MS passed; /crash exits 3;
// FIXTURE_EXIT_AT_START=1 exits before serving. Exits 0 on SIGTERM.
import { createServer } from "node:http";

if (process.env.FIXTURE_EXIT_AT_START === "1") {
  console.error("fixture: refusing to start");
  process.exit(1);
}
const readyAt = Date.now() + Number(process.env.FIXTURE_READY_AFTER_MS ?? 0);
const server = createServer((req, res) => {
  if (req.url === "/crash") process.exit(3);
  res.statusCode = req.url === "/healthz" && Date.now() >= readyAt ? 200 : 503;
  res.end();
});
server.listen(Number(process.env.FIXTURE_PORT), "127.0.0.1", () => console.log("fixture: listening"));
process.once("SIGTERM", () => server.close(() => process.exit(0)));
