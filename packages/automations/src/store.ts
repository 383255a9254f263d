import type { PoolClient } from "@crm/db";
import { HttpError } from "@crm/errors";
import type { SegmentDefinition } from "@crm/segment-definitions";
import { textProblem } from "@crm/storable";
import {
  type CreateEndpointBody,
  type CreateTriggerBody,
  checkTrigger,
  invalidRequest,
  type TriggerOn,
  type UpdateEndpointBody,
  type UpdateTriggerBody,
  urlProblem,
} from "./definitions.ts";
import { newWebhookSecret, sealSecret } from "./webhook-secret.ts";

// Every function runs inside `transaction(pool, tag, fn, { businessId })` of @crm/db: RLS then shows only that
// business's rows, so another business's id is simply not found (404). Each statement names the business too: the
// operator CLI runs as the admin role, which RLS does not restrict.

export interface EndpointRecord {
  id: string;
  business_id: string;
  url: string;
  description: string;
  event_types: string[] | null;
  enabled: boolean;
  disabled_reason: string | null;
  disabled_at: string | null;
  failing_since: string | null;
  /** While a rotation overlaps: until when the previous secret signs too. */
  previous_secret_expires_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface TriggerRecord {
  id: string;
  business_id: string;
  name: string;
  on: TriggerOn;
  contact_filter: SegmentDefinition | null;
  once_per_contact: boolean;
  delay_seconds: number;
  enabled: boolean;
  created_at: string;
  updated_at: string;
}

export interface DeliveryRecord {
  id: string;
  message_id: string;
  endpoint_id: string;
  trigger_id: string;
  contact_id: string;
  event_type: string;
  status: string;
  attempts: number;
  next_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  delivered_at: string | null;
}

export interface AttemptRecord {
  attempt: number;
  started_at: string;
  duration_ms: number;
  outcome: string;
  status_code: number | null;
  error: string | null;
  response_excerpt: string | null;
  next_attempt_at: string | null;
}

const iso = (value: Date | null): string | null => (value ? value.toISOString() : null);

const ENDPOINT_COLUMNS =
  "id, business_id, url, description, event_types, enabled, disabled_reason, disabled_at, failing_since, previous_expires_at, created_at, updated_at";
// biome-ignore lint/suspicious/noExplicitAny: rows come from node-postgres untyped
const toEndpoint = (row: any): EndpointRecord => ({
  id: row.id,
  business_id: row.business_id,
  url: row.url,
  description: row.description,
  event_types: row.event_types,
  enabled: row.enabled,
  disabled_reason: row.disabled_reason,
  disabled_at: iso(row.disabled_at),
  failing_since: iso(row.failing_since),
  previous_secret_expires_at:
    row.previous_expires_at && row.previous_expires_at > new Date() ? iso(row.previous_expires_at) : null,
  created_at: iso(row.created_at)!,
  updated_at: iso(row.updated_at)!,
});

const TRIGGER_COLUMNS =
  "id, business_id, name, kind, params, contact_filter, once_per_contact, delay_seconds, enabled, created_at, updated_at";
// biome-ignore lint/suspicious/noExplicitAny: rows come from node-postgres untyped
const toTrigger = (row: any): TriggerRecord => ({
  id: row.id,
  business_id: row.business_id,
  name: row.name,
  on: { kind: row.kind, ...row.params },
  contact_filter: row.contact_filter,
  once_per_contact: row.once_per_contact,
  delay_seconds: row.delay_seconds,
  enabled: row.enabled,
  created_at: iso(row.created_at)!,
  updated_at: iso(row.updated_at)!,
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const notFound = (what: string, id: string) => {
  const shown = UUID.test(id) ? id : "with that id";
  return new HttpError(404, "not_found", `no ${what} ${shown} in this business`);
};
/** An id from a path: anything that is not a uuid cannot name a row (404, never a database error). */
const idOr404 = (what: string, id: string) => {
  if (!UUID.test(id)) throw notFound(what, id);
  return id.toLowerCase();
};

function checkUrl(url: string): string {
  const problem = urlProblem(url);
  if (problem) throw invalidRequest([{ path: ["url"], message: problem }]);
  return url;
}

function checkDescription(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const problem = text.length > 500 ? "must be at most 500 characters" : textProblem(text, true);
  if (problem) throw invalidRequest([{ path: ["description"], message: problem }]);
  return text;
}

// ---------------------------------------------------------------------------------------------------- endpoints

/** A new endpoint and its secret: the only time the secret is shown. */
export async function createEndpoint(
  client: PoolClient,
  key: Buffer,
  businessId: string,
  body: CreateEndpointBody,
): Promise<{ endpoint: EndpointRecord; secret: string }> {
  const url = checkUrl(body.url);
  const description = checkDescription(body.description) ?? "";
  const secret = newWebhookSecret();
  const { rows } = await client.query(
    `INSERT INTO automation_endpoints (business_id, url, description, event_types, secret_sealed, enabled)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${ENDPOINT_COLUMNS}`,
    [businessId, url, description, body.event_types ?? null, sealSecret(secret, key), body.enabled ?? true],
  );
  return { endpoint: toEndpoint(rows[0]), secret };
}

export async function listEndpoints(client: PoolClient, businessId: string): Promise<EndpointRecord[]> {
  const { rows } = await client.query(
    `SELECT ${ENDPOINT_COLUMNS} FROM automation_endpoints WHERE business_id = $1 ORDER BY created_at, id`,
    [businessId],
  );
  return rows.map(toEndpoint);
}

export async function getEndpoint(
  client: PoolClient,
  businessId: string,
  id: string,
): Promise<EndpointRecord> {
  const { rows } = await client.query(
    `SELECT ${ENDPOINT_COLUMNS} FROM automation_endpoints WHERE business_id = $1 AND id = $2`,
    [businessId, idOr404("endpoint", id)],
  );
  if (!rows[0]) throw notFound("endpoint", id);
  return toEndpoint(rows[0]);
}

/** Changes url, description, filter or enabled; enabling clears the disabled reason and the failure clock. */
export async function updateEndpoint(
  client: PoolClient,
  businessId: string,
  id: string,
  body: UpdateEndpointBody,
): Promise<EndpointRecord> {
  const url = body.url === undefined ? null : checkUrl(body.url);
  const description = checkDescription(body.description) ?? null;
  const { rows } = await client.query(
    `UPDATE automation_endpoints SET
       url = coalesce($3, url),
       description = coalesce($4, description),
       event_types = CASE WHEN $5::boolean THEN $6::text[] ELSE event_types END,
       enabled = coalesce($7, enabled),
       disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason WHEN $7 THEN NULL ELSE 'manual' END,
       disabled_at = CASE WHEN $7 IS NULL THEN disabled_at WHEN $7 THEN NULL ELSE coalesce(disabled_at, now()) END,
       failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END,
       updated_at = now()
     WHERE business_id = $1 AND id = $2 RETURNING ${ENDPOINT_COLUMNS}`,
    [
      businessId,
      idOr404("endpoint", id),
      url,
      description,
      body.event_types !== undefined,
      body.event_types ?? null,
      body.enabled ?? null,
    ],
  );
  if (!rows[0]) throw notFound("endpoint", id);
  return toEndpoint(rows[0]);
}

/**
 * A new secret; the old one keeps signing for `overlapSeconds` (both signatures sent), so receivers can switch
 * without a failed delivery. A second rotation during an overlap ends the first one's old secret.
 */
export async function rotateEndpointSecret(
  client: PoolClient,
  key: Buffer,
  businessId: string,
  id: string,
  overlapSeconds: number,
): Promise<{ endpoint: EndpointRecord; secret: string }> {
  const secret = newWebhookSecret();
  const { rows } = await client.query(
    `UPDATE automation_endpoints SET previous_sealed = secret_sealed, secret_sealed = $3,
       previous_expires_at = now() + make_interval(secs => $4), updated_at = now()
     WHERE business_id = $1 AND id = $2 RETURNING ${ENDPOINT_COLUMNS}`,
    [businessId, idOr404("endpoint", id), sealSecret(secret, key), overlapSeconds],
  );
  if (!rows[0]) throw notFound("endpoint", id);
  return { endpoint: toEndpoint(rows[0]), secret };
}

/** Deletes an endpoint with its deliveries and their attempts. */
export async function deleteEndpoint(client: PoolClient, businessId: string, id: string): Promise<void> {
  const { rowCount } = await client.query(
    "DELETE FROM automation_endpoints WHERE business_id = $1 AND id = $2",
    [businessId, idOr404("endpoint", id)],
  );
  if (!rowCount) throw notFound("endpoint", id);
}

// ----------------------------------------------------------------------------------------------------- triggers

async function assertSegmentOfBusiness(client: PoolClient, businessId: string, on: TriggerOn | undefined) {
  if (!on || (on.kind !== "segment.entered" && on.kind !== "segment.exited")) return;
  const { rows } = await client.query(
    "SELECT 1 FROM segment_definitions WHERE business_id = $1 AND id = $2",
    [businessId, on.segment_id],
  );
  if (!rows[0]) {
    throw invalidRequest([
      { path: ["on", "segment_id"], message: "no segment with this id in this business" },
    ]);
  }
}

const paramsOf = (on: TriggerOn): Record<string, unknown> => {
  const { kind: _, ...params } = on;
  return params;
};

export async function createTrigger(
  client: PoolClient,
  businessId: string,
  body: CreateTriggerBody,
): Promise<TriggerRecord> {
  const { on, contactFilter } = checkTrigger(body);
  await assertSegmentOfBusiness(client, businessId, on);
  const { rows } = await client.query(
    `INSERT INTO automation_triggers
       (business_id, name, kind, params, contact_filter, once_per_contact, delay_seconds, enabled)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${TRIGGER_COLUMNS}`,
    [
      businessId,
      body.name.trim(),
      on!.kind,
      JSON.stringify(paramsOf(on!)),
      contactFilter ? JSON.stringify(contactFilter) : null,
      body.once_per_contact ?? false,
      body.delay_seconds ?? 0,
      body.enabled ?? true,
    ],
  );
  return toTrigger(rows[0]);
}

export async function listTriggers(client: PoolClient, businessId: string): Promise<TriggerRecord[]> {
  const { rows } = await client.query(
    `SELECT ${TRIGGER_COLUMNS} FROM automation_triggers WHERE business_id = $1 ORDER BY created_at, id`,
    [businessId],
  );
  return rows.map(toTrigger);
}

export async function getTrigger(client: PoolClient, businessId: string, id: string): Promise<TriggerRecord> {
  const { rows } = await client.query(
    `SELECT ${TRIGGER_COLUMNS} FROM automation_triggers WHERE business_id = $1 AND id = $2`,
    [businessId, idOr404("trigger", id)],
  );
  if (!rows[0]) throw notFound("trigger", id);
  return toTrigger(rows[0]);
}

export async function updateTrigger(
  client: PoolClient,
  businessId: string,
  id: string,
  body: UpdateTriggerBody,
): Promise<TriggerRecord> {
  const { on, contactFilter } = checkTrigger(body);
  await assertSegmentOfBusiness(client, businessId, on);
  const { rows } = await client.query(
    `UPDATE automation_triggers SET
       name = coalesce($3, name),
       kind = coalesce($4, kind),
       params = coalesce($5::jsonb, params),
       contact_filter = CASE WHEN $6::boolean THEN $7::jsonb ELSE contact_filter END,
       once_per_contact = coalesce($8, once_per_contact),
       delay_seconds = coalesce($9, delay_seconds),
       enabled = coalesce($10, enabled),
       updated_at = now()
     WHERE business_id = $1 AND id = $2 RETURNING ${TRIGGER_COLUMNS}`,
    [
      businessId,
      idOr404("trigger", id),
      body.name?.trim() ?? null,
      on?.kind ?? null,
      on ? JSON.stringify(paramsOf(on)) : null,
      contactFilter !== undefined,
      contactFilter ? JSON.stringify(contactFilter) : null,
      body.once_per_contact ?? null,
      body.delay_seconds ?? null,
      body.enabled ?? null,
    ],
  );
  if (!rows[0]) throw notFound("trigger", id);
  return toTrigger(rows[0]);
}

/** Deletes a trigger with its messages, their deliveries and attempts. */
export async function deleteTrigger(client: PoolClient, businessId: string, id: string): Promise<void> {
  const { rowCount } = await client.query(
    "DELETE FROM automation_triggers WHERE business_id = $1 AND id = $2",
    [businessId, idOr404("trigger", id)],
  );
  if (!rowCount) throw notFound("trigger", id);
}

// --------------------------------------------------------------------------------------------------- deliveries

const DELIVERY_SELECT = `SELECT d.id, d.message_id, d.endpoint_id, m.trigger_id, m.contact_id, m.event_type, d.status,
    d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.delivered_at
  FROM automation_deliveries d JOIN automation_messages m ON m.id = d.message_id`;
// biome-ignore lint/suspicious/noExplicitAny: rows come from node-postgres untyped
const toDelivery = (row: any): DeliveryRecord => ({
  ...row,
  next_attempt_at: row.status === "pending" ? iso(row.next_attempt_at) : null,
  created_at: iso(row.created_at)!,
  delivered_at: iso(row.delivered_at),
});

export interface DeliveryQuery {
  status?: "pending" | "succeeded" | "failed" | "all";
  endpointId?: string;
  triggerId?: string;
  messageId?: string;
  limit?: number;
}

/** The delivery log, newest first. */
export async function listDeliveries(
  client: PoolClient,
  businessId: string,
  query: DeliveryQuery,
): Promise<DeliveryRecord[]> {
  const filters = ["d.business_id = $1"];
  const params: unknown[] = [businessId];
  const add = (sql: string, value: unknown) => {
    params.push(value);
    filters.push(sql.replace("?", `$${params.length}`));
  };
  if (query.status && query.status !== "all") add("d.status = ?", query.status);
  if (query.endpointId) add("d.endpoint_id = ?", idOr404("endpoint", query.endpointId));
  if (query.triggerId) add("m.trigger_id = ?", idOr404("trigger", query.triggerId));
  if (query.messageId) add("d.message_id = ?", idOr404("message", query.messageId));
  params.push(Math.min(Math.max(query.limit ?? 50, 1), 500));
  const { rows } = await client.query(
    `${DELIVERY_SELECT} WHERE ${filters.join(" AND ")} ORDER BY d.created_at DESC, d.id LIMIT $${params.length}`,
    params,
  );
  return rows.map(toDelivery);
}

/** One delivery with every attempt, oldest first. */
export async function getDelivery(
  client: PoolClient,
  businessId: string,
  id: string,
): Promise<DeliveryRecord & { attempt_log: AttemptRecord[] }> {
  const { rows } = await client.query(`${DELIVERY_SELECT} WHERE d.business_id = $1 AND d.id = $2`, [
    businessId,
    idOr404("delivery", id),
  ]);
  if (!rows[0]) throw notFound("delivery", id);
  const attempts = await client.query(
    `SELECT attempt, started_at, duration_ms, outcome, status_code, error, response_excerpt, next_attempt_at
     FROM automation_attempts WHERE business_id = $1 AND delivery_id = $2 ORDER BY attempt, id`,
    [businessId, rows[0].id],
  );
  return {
    ...toDelivery(rows[0]),
    attempt_log: attempts.rows.map((a) => ({
      ...a,
      started_at: iso(a.started_at)!,
      next_attempt_at: iso(a.next_attempt_at),
    })),
  };
}

/**
 * Delivers a finished delivery again, now, with the same webhook-id and a fresh schedule. A pending one is
 * already going to be attempted (409); so is one to a disabled endpoint (409 until it is enabled).
 */
export async function replayDelivery(
  client: PoolClient,
  businessId: string,
  id: string,
): Promise<DeliveryRecord> {
  const { rows } = await client.query(
    `SELECT d.status, e.enabled FROM automation_deliveries d JOIN automation_endpoints e ON e.id = d.endpoint_id
     WHERE d.business_id = $1 AND d.id = $2 FOR UPDATE OF d`,
    [businessId, idOr404("delivery", id)],
  );
  if (!rows[0]) throw notFound("delivery", id);
  if (rows[0].status === "pending") {
    throw new HttpError(409, "delivery_pending", "this delivery is still pending; it will be attempted");
  }
  if (!rows[0].enabled) throw new HttpError(409, "endpoint_disabled", "enable the endpoint before replaying");
  await client.query(
    `UPDATE automation_deliveries SET status = 'pending', step = 0, next_attempt_at = now(), updated_at = now()
     WHERE business_id = $1 AND id = $2`,
    [businessId, id.toLowerCase()],
  );
  const replayed = await client.query(`${DELIVERY_SELECT} WHERE d.business_id = $1 AND d.id = $2`, [
    businessId,
    id.toLowerCase(),
  ]);
  return toDelivery(replayed.rows[0]);
}

/** The business's owner (secrets are the owner's only, SPEC 11). */
export async function isOwner(client: PoolClient, businessId: string, userId: string): Promise<boolean> {
  const { rows } = await client.query("SELECT owner_id FROM businesses WHERE id = $1", [businessId]);
  return rows[0]?.owner_id === userId;
}
