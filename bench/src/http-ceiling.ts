import { createServer } from "node:http";

/*
 * Child process: the raw HTTP ceiling of this machine for one Node process. It reads each request body and
 * answers 202 with a small JSON body, doing nothing else; the bench drives it with the same autocannon load as
 * scenario 1. Port: the first argument.
 */
const port = Number(process.argv[2] ?? 18_099);
let served = 0;
createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    served++;
    res.writeHead(202, { "content-type": "application/json" });
    res.end(`{"ok":true,"event_id":"00000000-0000-4000-8000-${String(served % 1e12).padStart(12, "0")}"}`);
  });
}).listen(port, "127.0.0.1", () => process.stdout.write("listening\n"));
process.once("SIGTERM", () => process.exit(0));
