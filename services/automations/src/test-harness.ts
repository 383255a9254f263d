import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import {
  type CreateEndpointBody,
  type CreateTriggerBody,
  createEndpoint,
  createTrigger,
  deploymentKey,
} from "@crm/automations";
import { stackEnv } from "@crm/config";
import { createPool, transaction } from "@crm/db";
import { createKafka, ensureTopics } from "@crm/kafka";
import { freePort, poll, ServiceProcess } from "@crm/process";
import { testEnv } from "@crm/testing";
import pg from "pg";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { Webhook as SvixWebhook } from "svix";
import { afterAll, beforeAll } from "vitest";

// Test support for the automations service: private input topics and group, the service as a child process from
// its real entry point, a webhook receiver that verifies every request with the real standardwebhooks and svix
// libraries, and the rows a scenario needs.

export interface InputTopics {
  contact: string;
  membership: string;
  events: string;
  groupId: string;
}

export async function createInputTopics(brokers: string[], partitions = 3): Promise<InputTopics> {
  const suffix = randomUUID().slice(0, 8);
  const topics = {
    contact: `contact.updated.v1.test-${suffix}`,
    membership: `segment.membership.v1.test-${suffix}`,
    events: `events.applied.v1.test-${suffix}`,
    groupId: `automations-test-${suffix}`,
  };
  const admin = createKafka({ brokers, clientId: "automations-test-admin" }).admin();
  await admin.connect();
  try {
    // Creating topics while other tests delete theirs can fail kafkajs's wait for leaders: try again.
    const names = [topics.contact, topics.membership, topics.events];
    await poll(
      "test topics created, with leaders",
      async () => {
        await ensureTopics(
          admin,
          names.map((topic) => ({ topic, numPartitions: partitions })),
        );
        for (const t of names) await admin.fetchTopicOffsets(t);
        return true;
      },
      { timeoutMs: 60_000 },
    );
  } finally {
    await admin.disconnect();
  }
  return topics;
}

export async function dropInputTopics(brokers: string[], topics: InputTopics): Promise<void> {
  const admin = createKafka({ brokers, clientId: "automations-test-admin" }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topics.contact, topics.membership, topics.events] }).catch(() => {});
  await admin.deleteGroups([topics.groupId]).catch(() => {});
  await admin.disconnect();
}

/** The service from src/main.ts on private topics, delivering to loopback (tests' receivers), short schedule. */
export async function startAutomations(
  topics: InputTopics,
  env: Record<string, string> = {},
): Promise<ServiceProcess & { port: number }> {
  const port = await freePort();
  const service = new ServiceProcess({
    name: "automations",
    entry: "services/automations/src/main.ts",
    env: {
      LOG_LEVEL: "info",
      AUTOMATIONS_PORT: String(port),
      AUTOMATIONS_GROUP_ID: topics.groupId,
      AUTOMATIONS_CONTACT_TOPIC: topics.contact,
      AUTOMATIONS_MEMBERSHIP_TOPIC: topics.membership,
      AUTOMATIONS_EVENTS_TOPIC: topics.events,
      AUTOMATIONS_FROM_BEGINNING: "1",
      AUTOMATIONS_ALLOW_PRIVATE_TARGETS: "1",
      AUTOMATIONS_RETRY_SCHEDULE_MS: "200,400,800,1600",
      AUTOMATIONS_POLL_MS: "50",
      AUTOMATIONS_SESSION_TIMEOUT_MS: "6000",
      ...env,
    },
    healthUrl: `http://127.0.0.1:${port}/readyz`,
    output: "capture",
  });
  await service.start(90_000);
  return Object.assign(service, { port });
}

export interface Received {
  id: string;
  timestamp: string;
  signature: string;
  body: string;
  at: number;
  /** Verified by both libraries with one of the secrets the receiver holds. */
  verified: boolean;
}

type Behaviour =
  | "ok"
  | "down"
  | "blackhole"
  | ((count: number) => { status: number; headers?: Record<string, string>; delayMs?: number });

/**
 * An HTTP receiver on a free loopback port. Every request is verified with the real `standardwebhooks` and `svix`
 * libraries against the secrets it holds (any one valid, as a receiver does during a rotation); `behave` decides
 * the answer: 200, down (connection refused), a blackhole (accepted, never answered) or a status per request.
 */
export class WebhookReceiver {
  readonly received: Received[] = [];
  /** webhook-ids of every request, answered or not, in arrival order. */
  readonly arrived: string[] = [];
  secrets: string[] = [];
  behaviour: Behaviour = "ok";
  port = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private requests = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async start(port?: number): Promise<this> {
    this.port = port ?? this.port ?? (await freePort());
    if (this.port === 0) this.port = await freePort();
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, "127.0.0.1", resolve));
    return this;
  }

  /** Closes the port (connections refused) and drops open connections. */
  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }

  verify(body: string, headers: Record<string, string>): boolean {
    return this.secrets.some((secret) => {
      try {
        new StandardWebhook(secret).verify(body, headers);
        new SvixWebhook(secret).verify(body, headers);
        return true;
      } catch {
        return false;
      }
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const headers = {
      "webhook-id": String(req.headers["webhook-id"] ?? ""),
      "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
      "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
    };
    const count = ++this.requests;
    const behaviour = this.behaviour;
    if (behaviour === "blackhole") return; // never answered; the socket stays open
    const answer: { status: number; headers?: Record<string, string>; delayMs?: number } =
      typeof behaviour === "function" ? behaviour(count) : { status: 200 };
    this.arrived.push(headers["webhook-id"]);
    if (answer.delayMs) await new Promise((resolve) => setTimeout(resolve, answer.delayMs));
    if (answer.status >= 200 && answer.status < 300) {
      this.received.push({
        id: headers["webhook-id"],
        timestamp: headers["webhook-timestamp"],
        signature: headers["webhook-signature"],
        body,
        at: Date.now(),
        verified: this.verify(body, headers),
      });
    }
    res.writeHead(answer.status, { "content-type": "text/plain", ...answer.headers });
    res.end(answer.status >= 300 ? "not now" : "ok");
  }
}

export const SECRET_KEY = () => deploymentKey(stackEnv().AUTOMATIONS_SECRET_KEY!);

/** An endpoint (as the management API creates it), returning its id and the secret shown once. */
export async function addEndpoint(
  pool: pg.Pool,
  businessId: string,
  body: Omit<CreateEndpointBody, "business_id">,
): Promise<{ id: string; secret: string }> {
  const created = await transaction(
    pool,
    "test.endpoint",
    (client) => createEndpoint(client, SECRET_KEY(), businessId, body),
    {
      businessId,
    },
  );
  return { id: created.endpoint.id, secret: created.secret };
}

export async function addTrigger(
  pool: pg.Pool,
  businessId: string,
  body: Omit<CreateTriggerBody, "business_id">,
): Promise<string> {
  const trigger = await transaction(
    pool,
    "test.trigger",
    (client) => createTrigger(client, businessId, body),
    {
      businessId,
    },
  );
  return trigger.id;
}

/** A contact row (as the resolver creates it), written as the admin role. */
export async function addContact(admin: pg.Pool, businessId: string, email = `${randomUUID()}@example.com`) {
  const id = randomUUID();
  await admin.query(
    `INSERT INTO crm_contacts (id, business_id, email, first_seen_at, last_seen_at) VALUES ($1, $2, $3, now(), now())`,
    [id, businessId, email],
  );
  return { id, email };
}

/** A contact.updated.v1 message for a contact (the shape Debezium's router writes: id/type/business_id headers). */
export function contactChange(
  businessId: string,
  contact: { id: string; email: string },
  options: {
    change?: "created" | "updated" | "merged";
    version?: number;
    changedFields?: string[];
    traits?: object;
  } = {},
) {
  const outboxId = randomUUID();
  const change = options.change ?? "created";
  const now = new Date().toISOString();
  return {
    outboxId,
    message: {
      key: contact.id,
      headers: { id: outboxId, type: `contact.${change}`, business_id: businessId },
      value: JSON.stringify({
        contact_id: contact.id,
        business_id: businessId,
        version: options.version ?? 1,
        change,
        changed_fields: options.changedFields ?? ["email"],
        contact: {
          email: contact.email,
          first_seen_at: now,
          last_seen_at: now,
          ...(options.traits ? { traits: options.traits } : {}),
        },
        identities: [{ type: "email", value: contact.email }],
        cause_event_id: randomUUID(),
        occurred_at: now,
      }),
    },
  };
}

/** A producer as the stack's admin (tests write the inputs themselves). */
export async function adminProducer(brokers: string[]) {
  const producer = createKafka({ brokers, clientId: "automations-test-producer" }).producer();
  await producer.connect();
  return producer;
}

/**
 * What an integration test file of the service shares, made in its beforeAll and released in its afterAll: the
 * admin and service pools, private input topics, an admin producer, one receiver, and the service once the file
 * starts it (`fixture.automations = await startAutomations(...)`), which is stopped first.
 */
export function useAutomationsFixture(options: { partitions: number; adminPoolSize: number }) {
  const env = testEnv();
  const fixture = {
    env,
    admin: new pg.Pool({ connectionString: env.adminUrl, max: options.adminPoolSize }),
    service: createPool({ connectionString: env.databaseUrl, applicationName: "automations-test", max: 4 }),
    receiver: new WebhookReceiver(),
    topics: undefined as unknown as InputTopics,
    producer: undefined as unknown as Awaited<ReturnType<typeof adminProducer>>,
    automations: undefined as Awaited<ReturnType<typeof startAutomations>> | undefined,
  };
  beforeAll(async () => {
    fixture.topics = await createInputTopics(env.brokers, options.partitions);
    fixture.producer = await adminProducer(env.brokers);
    await fixture.receiver.start();
  }, 60_000);
  afterAll(async () => {
    await fixture.automations?.stop();
    await fixture.producer?.disconnect();
    await fixture.receiver.stop();
    if (fixture.topics) await dropInputTopics(env.brokers, fixture.topics);
    await fixture.service.end();
    await fixture.admin.end();
  });
  return fixture;
}
