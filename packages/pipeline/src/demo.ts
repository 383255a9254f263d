import { type ContactChange, ContactConsumer } from "@crm/contact-consumer";
import { createKafka, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { consumerGroupAtTopicEnd, signUserToken } from "@crm/testing";
import pg from "pg";

export const DEMO = {
  businessId: "00000000-0000-4000-8000-00000000b001",
  ownerId: "00000000-0000-4000-8000-00000000a001",
  outsiderId: "00000000-0000-4000-8000-00000000a002",
};

interface Step {
  label: string;
  token: string;
  body: unknown;
  /** The contact.updated.v1 message types this step must cause, once the ones before it were applied. */
  expect: string[];
}

/**
 * `npm start`'s demo: two contacts, one known by email and one by phone, then a login carrying both, which merges
 * them; then a request the API must refuse. Each step waits until the worker applied the event and its messages
 * are on contact.updated.v1 before the next is sent: events of different identifiers go to different partitions,
 * so without the wait the login could be applied before the purchase and there would be nothing to merge.
 * Returns a token of the demo owner for the curl hint.
 */
export async function runDemo(
  env: Record<string, string>,
  say: (line: string) => void,
  /** How far behind events.raw.v1 the workers are, for the progress line of a long wait. */
  workersLag: () => Promise<number>,
): Promise<string> {
  const brokers = env.KAFKA_BROKERS!.split(",");
  const admin = new pg.Client({ connectionString: env.DATABASE_ADMIN_URL });
  await admin.connect();
  const groupId = await consumerGroupAtTopicEnd(brokers, TOPICS.contactUpdated, "demo");
  const changes: ContactChange[] = [];
  const consumer = new ContactConsumer({
    kafka: brokers,
    groupId,
    onChange: (change) => {
      if (change.businessId === DEMO.businessId) changes.push(change);
    },
  });
  try {
    await admin.query(
      `INSERT INTO businesses (id, name, owner_id, default_country) VALUES ($1, 'Demo Coffee Co', $2, 'US')
       ON CONFLICT (id) DO NOTHING`,
      [DEMO.businessId, DEMO.ownerId],
    );
    say(`demo business ${DEMO.businessId} (owner ${DEMO.ownerId})`);
    await consumer.start();

    const ownerToken = await signUserToken(env.JWT_SECRET!, DEMO.ownerId, { expiresIn: "12h" });
    const run = Date.now().toString(36);
    const email = `alice.${run}@example.com`;
    const phone = `+1555${String(Date.now() % 10_000_000).padStart(7, "0")}`;
    const steps: Step[] = [
      {
        label: "signup with an email",
        token: ownerToken,
        body: { type: "signup", contact: { email: email.toUpperCase(), name: "Alice" } },
        expect: ["contact.created"],
      },
      {
        label: "a purchase known only by phone (a second contact)",
        token: ownerToken,
        body: { type: "purchase", contact: { phone }, props: { amount: 4.5 } },
        expect: ["contact.created"],
      },
      {
        label: "login with email + phone + account id (merges the two)",
        token: ownerToken,
        body: { type: "login", contact: { external_id: `acct_${run}`, email, phone } },
        expect: ["contact.merged", "contact.merged_away"],
      },
      {
        label: "an outsider writing for the demo business (refused)",
        token: await signUserToken(env.JWT_SECRET!, DEMO.outsiderId),
        body: { type: "spoof", business_id: DEMO.businessId },
        expect: [],
      },
    ];
    const waiting = async () =>
      `     waiting for the worker to apply it: the worker is ${await workersLag()} events behind on ` +
      "events.raw.v1 (left there by tests and tools); START_FROM_END=1 npm start skips them";
    let held = true;
    for (const [i, step] of steps.entries()) {
      const res = await fetch(`${env.INGEST_URL}/v1/track`, {
        method: "POST",
        headers: { authorization: `Bearer ${step.token}`, "content-type": "application/json" },
        body: JSON.stringify(step.body),
      });
      const text = await res.text();
      say(`${i + 1}. ${step.label}: HTTP ${res.status} ${text}`);
      const eventId = res.status === 202 ? (JSON.parse(text).event_id as string) : undefined;
      const caused = eventId ? await applied(admin, changes, eventId, async () => say(await waiting())) : [];
      for (const change of caused) say(`     -> ${describeChange(change)}`);
      const types = caused.map((change) => change.type).sort();
      if (types.join() !== step.expect.join()) {
        held = false;
        say(`     (expected ${step.expect.join(" + ") || "no change"}, got ${types.join(" + ") || "none"})`);
      }
    }
    say(
      held
        ? "the story held: two contacts, merged into one by the login; the outsider changed nothing"
        : "the story did NOT hold (see the expected lines above)",
    );
    return ownerToken;
  } finally {
    await consumer.stop();
    const kafkaAdmin = createKafka({ brokers, clientId: "demo" }).admin();
    await kafkaAdmin.connect();
    await kafkaAdmin.deleteGroups([groupId]).catch(() => {});
    await kafkaAdmin.disconnect();
    await admin.end();
  }
}

/**
 * Waits until the worker applied `eventId` and every message it caused reached us; returns those messages.
 * The worker may first have to catch up with what others left on events.raw.v1: `progress` every 15 s meanwhile.
 */
async function applied(
  admin: pg.Client,
  changes: ContactChange[],
  eventId: string,
  progress: () => Promise<void>,
): Promise<ContactChange[]> {
  let nextProgressAt = Date.now() + 15_000;
  // The event row and its outbox rows are written in one transaction: once the row is there, so is the count.
  const outboxRows = await poll(
    `event ${eventId} applied by the worker`,
    async () => {
      const { rows } = await admin.query<{ n: number }>(
        `SELECT (SELECT count(*)::int FROM outbox
                 WHERE created_at > now() - interval '10 minutes' AND payload->>'cause_event_id' = $1::text) AS n
         FROM crm_events WHERE id = $1::uuid`,
        [eventId],
      );
      if (rows[0]) return rows[0].n;
      if (Date.now() >= nextProgressAt) {
        nextProgressAt += 15_000;
        await progress();
      }
      return undefined;
    },
    { timeoutMs: 30 * 60_000 },
  );
  return poll(
    `${outboxRows} contact.updated.v1 message(s) caused by ${eventId}`,
    () => {
      const caused = changes.filter((change) => change.value.cause_event_id === eventId);
      return caused.length >= outboxRows ? caused : undefined;
    },
    { timeoutMs: 30_000 },
  );
}

function describeChange({ type, contactId, value }: ContactChange): string {
  const id = (uuid: string) => uuid.slice(0, 8);
  const { contact } = value;
  const fields = [
    contact.external_id && `ext=${contact.external_id}`,
    contact.email && `email=${contact.email}`,
    contact.phone && `phone=${contact.phone}`,
    contact.name && `name=${contact.name}`,
  ].filter(Boolean);
  const head = `${type} ${id(contactId)} v${value.version}`;
  if (value.merged_into) return `${head}: merged into ${id(value.merged_into)}`;
  const from = value.merged_from?.length ? ` (absorbed ${value.merged_from.map(id).join(", ")})` : "";
  return `${head}: ${fields.join(" ")}${from}`;
}
