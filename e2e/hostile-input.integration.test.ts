import { randomBytes, randomUUID } from "node:crypto";
import { createKafka, KafkaEventProducer, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  dateText,
  graphemes,
  hostileString,
  mostly,
  NASTY,
  props,
  rawText,
  tree,
} from "./hostile-arbitraries.ts";
import { startPipelineProcesses } from "./pipeline-processes.ts";

// Issue 11: no input can stop, stall or poison the pipeline. Arbitrary Unicode and JSON go into every field of
// both endpoints of a real ingest-api, in front of a real resolver-worker, Kafka and Postgres. Every answer must
// be a client error or an acceptance, and every acceptance must become a crm_events row, never a dead letter.
// FUZZ_RUNS and FUZZ_SEED choose the run: `npm test` runs a fixed seed, `npm run test:fuzz` a longer one.
const RUNS = Number(process.env.FUZZ_RUNS ?? 1_000);
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_127);
// 403: a well-formed business_id of somebody else's business (the tenant check, not a failure to store).
const ALLOWED = new Set([202, 400, 403, 413, 429]);

function trackBody(businessId: string) {
  const field = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 3 });
  const email = fc.oneof(
    { weight: 4, arbitrary: fc.emailAddress() },
    fc
      .tuple(fc.emailAddress(), fc.constantFrom(...NASTY), fc.nat(20))
      .map(([e, c, at]) => e.slice(0, at) + c + e.slice(at)),
    hostileString,
  );
  const benignProps = fc.dictionary(graphemes(12), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 });
  return fc.record(
    {
      type: mostly(graphemes(40), fc.oneof(hostileString, tree)),
      business_id: fc.oneof(
        { weight: 6, arbitrary: fc.constant(businessId) },
        { weight: 1, arbitrary: fc.uuid() },
        { weight: 1, arbitrary: hostileString },
      ),
      contact: mostly(
        fc.record(
          {
            external_id: field(
              mostly(graphemes(30), fc.constantFrom("ｎｕｌｌ", "null\u200b", "acct\u200d_1")),
            ),
            email: field(email),
            phone: field(
              fc.constantFrom("+1 555 123 4567", "+1 555\u200b123 4567", "+44 20 7946 0958", "12"),
            ),
            name: field(mostly(graphemes(40), hostileString)),
            anonymous_id: field(mostly(graphemes(30), fc.oneof(hostileString, fc.constant("anonymous")))),
            previous_id: field(mostly(graphemes(30), hostileString)),
            traits: field(fc.oneof({ weight: 3, arbitrary: benignProps }, { weight: 1, arbitrary: tree })),
          },
          { requiredKeys: [] },
        ),
        tree,
      ),
      props: fc.oneof(
        { weight: 4, arbitrary: benignProps },
        { weight: 2, arbitrary: props },
        { weight: 1, arbitrary: tree },
      ),
      occurred_at: dateText,
      extra: tree,
    },
    { requiredKeys: ["type"] },
  );
}

type Case = { path: "/v1/track" | "/v1/batch"; body: string; key: string | undefined };

function requests(businessId: string) {
  const items = fc.oneof(
    { weight: 4, arbitrary: trackBody(businessId).map((b) => JSON.stringify(b)) },
    { weight: 1, arbitrary: rawText(businessId) },
  );
  // Keys are unique per case (200/409/422 are other tests' subject); their tail is arbitrary ASCII or worse.
  const key = fc.option(fc.string({ maxLength: 16 }), { nil: undefined });
  const track = fc.tuple(items, key).map(([body, k]): Case => ({ path: "/v1/track", body, key: k }));
  const batch = fc
    .array(mostly(trackBody(businessId), tree), { maxLength: 8 })
    .map((events): Case => ({ path: "/v1/batch", body: JSON.stringify({ events }), key: undefined }));
  return fc.oneof({ weight: 3, arbitrary: track }, { weight: 1, arbitrary: batch });
}

/**
 * events.raw.v1 values as anything but ingest-api might write them: a valid event with one field replaced by a
 * hostile value, arbitrary JSON, arbitrary bytes. Each carries its own event id when it has one.
 */
function rawMessages(businessId: string) {
  const valid = () => ({
    event_id: randomUUID(),
    business_id: businessId,
    type: "raw",
    contact: { external_id: `acct-${randomUUID()}` },
    props: {},
    occurred_at: new Date().toISOString(),
    received_at: new Date().toISOString(),
    source: { kind: "ingest_key", id_hash: "fuzz" },
  });
  const field = fc.constantFrom(
    "event_id",
    "business_id",
    "type",
    "contact",
    "props",
    "occurred_at",
    "source",
  );
  const mutated = fc
    .tuple(field, fc.oneof(hostileString, tree, dateText, fc.uuid()))
    .map(([name, value]) => Buffer.from(JSON.stringify({ ...valid(), [name]: value })));
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant(null).map(() => Buffer.from(JSON.stringify(valid()))) },
    { weight: 4, arbitrary: mutated },
    { weight: 1, arbitrary: tree.map((value) => Buffer.from(JSON.stringify(value) ?? "null")) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)) },
  );
}

describe("hostile input end to end (issue 11)", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let api: RunningService;
  let worker: RunningService;
  let dlq: TopicProbe;
  let businessId: string;
  const ingestKey = `ik_${randomBytes(32).toString("base64url")}`;

  beforeAll(async () => {
    ({ businessId } = await createBusiness(admin));
    await admin.query(
      "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), 'fuzz')",
      [businessId, ingestKey],
    );
    dlq = await new TopicProbe(env.brokers, TOPICS.dlq).start();
    ({ api, worker } = await startPipelineProcesses({
      brokers: env.brokers,
      groupPrefix: "fuzz",
      env: { LOG_LEVEL: "warn" },
    }));
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop(), dlq?.stop()]);
    await admin.end();
  });

  async function send(c: Case): Promise<{ status: number; body: unknown } | "unsendable"> {
    const headers: Record<string, string> = {
      authorization: `Bearer ${ingestKey}`,
      "content-type": "application/json",
    };
    // A fresh prefix per request (fast-check repeats small values often): keys are unique, their tail arbitrary.
    if (c.key !== undefined) headers["idempotency-key"] = `${randomUUID()}-${c.key}`;
    let res: Response;
    try {
      res = await fetch(`${api.url}${c.path}`, { method: "POST", headers, body: c.body });
    } catch (error) {
      // fetch refuses a header value that is not a ByteString (newline, NUL, > U+00FF) before sending anything
      if (error instanceof TypeError && /header/i.test(String(error.message))) return "unsendable";
      throw error;
    }
    return { status: res.status, body: await res.json() };
  }

  it(`answers ${RUNS} arbitrary requests with 2xx or 4xx only, and applies every acceptance (seed ${SEED})`, async () => {
    const outcomes = new Map<string, number>();
    const count = (what: string) => {
      outcomes.set(what, (outcomes.get(what) ?? 0) + 1);
    };
    const accepted: string[] = [];

    await fc.assert(
      fc.asyncProperty(requests(businessId), async (c) => {
        const res = await send(c);
        if (res === "unsendable") {
          count("unsendable header");
          return;
        }
        count(`${c.path} ${res.status}`);
        expect(ALLOWED, `${c.path} ${c.body.slice(0, 300)} -> ${JSON.stringify(res.body)}`).toContain(
          res.status,
        );
        const body = res.body as {
          event_id?: string;
          results?: { ok: boolean; event_id?: string; error?: { code: string } }[];
        };
        if (res.status === 202 && c.path === "/v1/track") accepted.push(body.event_id!);
        for (const item of body.results ?? []) {
          count(`/v1/batch item ${item.ok ? "accepted" : item.error!.code}`);
          if (item.ok) accepted.push(item.event_id!);
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );

    // Every acceptance is applied: a crm_events row of this business, within a bounded time.
    await poll(
      `all ${accepted.length} accepted events applied`,
      async () => {
        const { rows } = await admin.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM crm_events WHERE business_id = $1 AND id = ANY ($2::uuid[])",
          [businessId, accepted],
        );
        return rows[0]!.n === accepted.length ? true : undefined;
      },
      { timeoutMs: 90_000 },
    );
    // ... and none of them, nor anything else of this business, was dead-lettered.
    const deadLetters = dlq.messages.filter(
      (m) => m.key?.startsWith(`${businessId}:`) && !m.key.startsWith(`${businessId}:fuzz:`),
    );
    expect(deadLetters.map((m) => m.headers["error.message"])).toEqual([]);

    console.log(
      `[fuzz] seed ${SEED}, ${RUNS} requests, ${accepted.length} events accepted and applied, 0 dead-lettered; outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`,
    );
  });

  it("every arbitrary message written straight to events.raw.v1 is applied or dead-lettered, and stalls nothing", async () => {
    const messages = fc.sample(rawMessages(businessId), { numRuns: Math.min(RUNS, 300), seed: SEED });
    const keyed = messages.map((value, i) => ({ key: `${businessId}:fuzz:${i}`, value }));
    const kafka = createKafka({ brokers: env.brokers, clientId: "fuzz-producer" });
    const producer = new KafkaEventProducer(kafka, { sendTimeoutMs: 10_000 });
    await producer.send(TOPICS.raw, keyed);
    await producer.close();
    const idOf = (value: Buffer) => {
      try {
        const id = (JSON.parse(value.toString("utf8")) as { event_id?: unknown }).event_id;
        return typeof id === "string" && /^[0-9a-f-]{36}$/i.test(id) ? id : undefined;
      } catch {
        return undefined;
      }
    };
    const { applied, deadLettered } = await poll(
      `all ${keyed.length} raw messages applied or dead-lettered`,
      async () => {
        const ids = keyed.map((m) => idOf(m.value)).filter((id): id is string => id !== undefined);
        const { rows } = await admin.query<{ id: string }>(
          "SELECT id::text FROM crm_events WHERE id = ANY ($1::uuid[])",
          [ids],
        );
        const appliedIds = new Set(rows.map((r) => r.id));
        const dlqKeys = new Set(dlq.messages.map((m) => m.key));
        const open = keyed.filter((m) => !dlqKeys.has(m.key) && !appliedIds.has(idOf(m.value) ?? ""));
        return open.length === 0
          ? { applied: appliedIds.size, deadLettered: keyed.length - appliedIds.size }
          : undefined;
      },
      { timeoutMs: 90_000 },
    );
    // A dead letter says why, for an operator to decide.
    for (const m of dlq.messages.filter((d) => d.key?.startsWith(`${businessId}:fuzz:`))) {
      expect(m.headers["error.message"]).toBeTruthy();
    }
    console.log(
      `[fuzz] events.raw.v1: ${keyed.length} arbitrary messages, ${applied} applied, ${deadLettered} dead-lettered`,
    );
  });

  it("a NUL in a name is a 400, and good events of other tenants keep being applied", async () => {
    const bad = await send({
      path: "/v1/track",
      body: '{"type":"x","contact":{"external_id":"a","name":"M\\u0000"}}',
      key: undefined,
    });
    expect(bad).toMatchObject({ status: 400 });
    const others = await Promise.all(
      [1, 2, 3].map(async () => {
        const other = await createBusiness(admin);
        const key = `ik_${randomBytes(32).toString("base64url")}`;
        await admin.query(
          "INSERT INTO ingest_keys (business_id, key_hash, label) VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), 'fuzz')",
          [other.businessId, key],
        );
        const res = await fetch(`${api.url}/v1/track`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ type: "good", contact: { external_id: `acct-${randomUUID()}` } }),
        });
        expect(res.status).toBe(202);
        return ((await res.json()) as { event_id: string }).event_id;
      }),
    );
    await poll(
      "the other tenants' events applied",
      async () => {
        const { rows } = await admin.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM crm_events WHERE id = ANY ($1::uuid[])",
          [others],
        );
        return rows[0]!.n === others.length ? true : undefined;
      },
      { timeoutMs: 30_000 },
    );
  });
});
