import { createServer, type Server } from "node:http";
import { signWebhook } from "@crm/automations";
import { freePort, poll } from "@crm/process";

const DEMO_MARK = "npm start demo";

interface Received {
  headers: Record<string, string>;
  body: string;
}

/**
 * `npm start`'s automations step (issue 17): a local receiver, an endpoint pointing at it and a trigger on contact
 * creation, both made through the management API as the demo owner; then a signup, and the one signed webhook it
 * causes, with its Standard Webhooks headers and the signature checked. Endpoints and triggers of an earlier run
 * are deleted first (their receiver is gone). The receiver keeps answering until npm start stops.
 */
export async function runAutomationsDemo(
  env: Record<string, string>,
  say: (line: string) => void,
  ownerToken: string,
): Promise<Server> {
  const received: Received[] = [];
  const port = await freePort();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const pick = (name: string) => String(req.headers[name] ?? "");
      received.push({
        headers: Object.fromEntries(
          ["webhook-id", "webhook-timestamp", "webhook-signature"].map((h) => [h, pick(h)]),
        ),
        body: Buffer.concat(chunks).toString("utf8"),
      });
      res.end("ok");
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${env.INGEST_URL}${path}`, {
      method,
      headers: { authorization: `Bearer ${ownerToken}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    // biome-ignore lint/suspicious/noExplicitAny: demo output
    const json = (await res.json()) as any;
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  for (const old of (await api("GET", "/v1/manage/automations/endpoints")).endpoints) {
    if (old.description === DEMO_MARK) await api("DELETE", `/v1/manage/automations/endpoints/${old.id}`);
  }
  for (const old of (await api("GET", "/v1/manage/automations/triggers")).triggers) {
    if (old.name === DEMO_MARK) await api("DELETE", `/v1/manage/automations/triggers/${old.id}`);
  }
  const { endpoint, secret } = await api("POST", "/v1/manage/automations/endpoints", {
    url: `http://127.0.0.1:${port}/webhooks`,
    description: DEMO_MARK,
  });
  await api("POST", "/v1/manage/automations/triggers", { name: DEMO_MARK, on: { kind: "contact.created" } });
  say(
    `automations: endpoint ${endpoint.url} (secret ${secret.slice(0, 10)}..., shown once) and a trigger on contact.created`,
  );

  const email = `bob.${Date.now().toString(36)}@example.com`;
  const res = await fetch(`${env.INGEST_URL}/v1/track`, {
    method: "POST",
    headers: { authorization: `Bearer ${ownerToken}`, "content-type": "application/json" },
    body: JSON.stringify({ type: "signup", contact: { email } }),
  });
  say(`automations: signup of ${email}: HTTP ${res.status}`);
  const [hook] = await poll("the signed webhook", async () => (received.length > 0 ? received : undefined), {
    timeoutMs: 60_000,
  });
  const { "webhook-id": id, "webhook-timestamp": timestamp, "webhook-signature": signature } = hook!.headers;
  const valid = signature!.split(" ").includes(signWebhook(secret, id!, Number(timestamp), hook!.body));
  say(`     -> POST /webhooks webhook-id: ${id} webhook-timestamp: ${timestamp}`);
  say(`        webhook-signature: ${signature} (${valid ? "valid" : "INVALID"} for the endpoint's secret)`);
  say(`        ${hook!.body.slice(0, 160)}${hook!.body.length > 160 ? "..." : ""}`);
  say("     delivery log: npm run automations -- deliveries list " + endpoint.business_id);
  return server;
}
