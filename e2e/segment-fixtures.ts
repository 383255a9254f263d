import { randomBytes } from "node:crypto";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Analytics } from "@segment/analytics-node";
import type pg from "pg";

// What the Segment-compatible listener's end-to-end tests share: ingest keys, the real SDKs, a proxy that fails
// on purpose, and the rows a business ends with.

/** A new ingest key (write key) of `businessId`, stored hashed as `npm run ingest-keys -- create` does. */
export async function createIngestKey(admin: pg.Pool, businessId: string): Promise<string> {
  const key = `ik_${randomBytes(32).toString("base64url")}`;
  await admin.query(
    "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), 'segment e2e')",
    [businessId, key],
  );
  return key;
}

/** The real analytics-node 3.x, only `host` changed, with the statuses it saw and the deliveries it gave up. */
export function segmentClient(host: string, writeKey: string, settings: { flushAt?: number } = {}) {
  const analytics = new Analytics({
    writeKey,
    host,
    flushInterval: 200,
    ...(settings.flushAt ? { flushAt: settings.flushAt } : {}),
  });
  const statuses: number[] = [];
  const failures: unknown[] = [];
  analytics.on("http_response", (response) => statuses.push(response.status));
  analytics.on("error", (error) => failures.push(error));
  return { analytics, statuses, failures };
}

/**
 * An HTTP proxy in front of the listener that answers 503 to the first `refuse` requests without forwarding them,
 * then forwards `forwardButFail` more and answers 503 anyway (the listener applied them; the SDK must retry and
 * they must not apply twice), then passes everything. Records each request's headers.
 */
export async function startFailingProxy(
  target: string,
  options: { refuse?: number; forwardButFail?: number } = {},
): Promise<{
  url: string;
  requests: Record<string, string | string[] | undefined>[];
  close: () => Promise<void>;
}> {
  const url = new URL(target);
  const requests: Record<string, string | string[] | undefined>[] = [];
  let refuse = options.refuse ?? 0;
  let forwardButFail = options.forwardButFail ?? 0;
  const server: Server = createServer((req, res) => {
    requests.push(req.headers);
    if (refuse > 0) {
      refuse -= 1;
      req.resume();
      res.writeHead(503, { "content-type": "application/json" }).end('{"ok":false}');
      return;
    }
    const fail = forwardButFail > 0;
    if (fail) forwardButFail -= 1;
    const upstream = httpRequest(
      { host: url.hostname, port: url.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        if (fail) {
          answer.resume();
          answer.on("end", () => res.writeHead(503, { "content-type": "application/json" }).end("{}"));
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export interface ContactRow {
  id: string;
  external_id: string | null;
  email: string | null;
  phone: string | null;
  name: string | null;
  traits: Record<string, unknown>;
  version: string;
}

/** The live (not merged away) contacts of a business, with their identities as `type:value`, sorted. */
export async function liveContacts(
  admin: pg.Pool,
  businessId: string,
): Promise<(ContactRow & { identities: string[] })[]> {
  const { rows } = await admin.query<ContactRow & { identities: string[] }>(
    `SELECT c.id, c.external_id, c.email, c.phone, c.name, c.traits, c.version,
            coalesce((SELECT array_agg(i.type || ':' || i.value ORDER BY i.type, i.value)
                      FROM contact_identities i WHERE i.contact_id = c.id), '{}') AS identities
     FROM crm_contacts c WHERE c.business_id = $1 AND c.merged_into IS NULL ORDER BY c.created_at`,
    [businessId],
  );
  return rows;
}

/** How many crm_events rows a business has. */
export async function eventCount(admin: pg.Pool, businessId: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM crm_events WHERE business_id = $1",
    [businessId],
  );
  return rows[0]!.n;
}
