import { randomBytes, randomUUID } from "node:crypto";
import { gzipSync } from "node:zlib";
import { TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { createBusiness, type RunningService, TopicProbe, testEnv } from "@crm/testing";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dateText, graphemes, hostileString, mostly, props, rawText, tree } from "./hostile-arbitraries.ts";
import { startPipelineProcesses } from "./pipeline-processes.ts";
import { createIngestKey, eventCount } from "./segment-fixtures.ts";

// Issue 15 point 5: the hostile-input rules of issue 11 hold on the Segment-compatible listener exactly as on
// /v1/track. Arbitrary Unicode and JSON in every field of every Segment endpoint, as plain or gzip bodies, with good
// and bad write keys, against a real ingest-api and resolver-worker: the answer is only ever 200, 400, 413 or 429
// (401 only for a bad key), never a 5xx; every message the listener counts as accepted is applied (a crm_events row,
// no dead letter), and nothing reaches the other business named in the messages.
const RUNS = Number(process.env.FUZZ_RUNS ?? 500);
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_127);
const ALLOWED = new Set([200, 400, 413, 429]);
const CALLS = ["track", "identify", "page", "screen", "group", "alias", "batch", "import"] as const;

type Auth = "basic" | "body" | "bad";
type Case = {
  call: (typeof CALLS)[number];
  auth: Auth;
  badKey: string;
  gzip: boolean;
  body: unknown | string;
};

const benignProps = fc.dictionary(graphemes(12), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 });
const recent = fc
  .date({ min: new Date("2020-01-01"), max: new Date(), noInvalidDate: true })
  .map((d) => d.toISOString());

/** A message an SDK could send: arbitrary text, but the shape Segment's spec gives each call. */
const benignMessage = fc.record(
  {
    type: fc.constantFrom("track", "identify", "page", "screen", "group", "alias"),
    userId: graphemes(30),
    anonymousId: graphemes(30),
    previousId: graphemes(30),
    groupId: graphemes(30),
    event: graphemes(40),
    name: graphemes(40),
    properties: benignProps,
    traits: benignProps,
    context: fc.record({ ip: fc.ipV4(), userAgent: graphemes(60) }, { requiredKeys: [] }),
    timestamp: recent,
    originalTimestamp: recent,
    messageId: graphemes(20),
  },
  { requiredKeys: ["type", "userId", "event", "groupId", "previousId"] },
);

/** Anything in any field, another business named, timestamps out of range. */
function hostileMessage(otherBusiness: string) {
  const id = fc.oneof(
    { weight: 4, arbitrary: graphemes(30) },
    { weight: 1, arbitrary: fc.oneof(hostileString, tree, fc.integer()) },
  );
  const object = fc.oneof(
    { weight: 4, arbitrary: benignProps },
    { weight: 1, arbitrary: props },
    { weight: 1, arbitrary: tree },
  );
  return fc.record(
    {
      type: mostly(fc.constantFrom("track", "identify", "page", "screen", "group", "alias"), hostileString),
      userId: id,
      anonymousId: id,
      previousId: id,
      groupId: id,
      event: mostly(graphemes(40), fc.oneof(hostileString, tree)),
      name: mostly(graphemes(40), hostileString),
      properties: object,
      traits: fc.oneof(
        { weight: 4, arbitrary: benignProps },
        {
          weight: 1,
          arbitrary: fc.record({ email: mostly(fc.emailAddress(), hostileString), phone: hostileString }),
        },
        { weight: 1, arbitrary: tree },
      ),
      context: mostly(
        fc.record(
          { ip: mostly(fc.ipV4(), hostileString), userAgent: hostileString, library: tree },
          { requiredKeys: [] },
        ),
        tree,
      ),
      timestamp: dateText,
      originalTimestamp: dateText,
      sentAt: dateText,
      messageId: fc.option(hostileString, { nil: undefined, freq: 5 }),
      business_id: fc.constantFrom(otherBusiness, "not-a-uuid"),
      integrations: tree,
      _metadata: tree,
    },
    { requiredKeys: [] },
  );
}

const message = (otherBusiness: string) =>
  fc.oneof(
    { weight: 3, arbitrary: benignMessage },
    { weight: 2, arbitrary: hostileMessage(otherBusiness) },
    { weight: 1, arbitrary: tree },
  );

function requests(otherBusiness: string) {
  const item = message(otherBusiness);
  const body = fc.oneof(
    { weight: 4, arbitrary: item },
    {
      weight: 3,
      arbitrary: fc.record(
        {
          batch: fc.oneof(
            { weight: 5, arbitrary: fc.array(item, { maxLength: 8 }) },
            { weight: 1, arbitrary: tree },
          ),
          sentAt: dateText,
        },
        { requiredKeys: ["batch"] },
      ),
    },
    { weight: 1, arbitrary: rawText(otherBusiness) },
  );
  return fc.record({
    call: fc.constantFrom(...CALLS),
    auth: fc.constantFrom<Auth>("basic", "basic", "basic", "basic", "body", "bad"),
    badKey: fc.oneof(
      fc.constant(`ik_${randomBytes(32).toString("base64url")}`),
      hostileString,
      fc.constant("eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
    ),
    gzip: fc.boolean(),
    body,
  });
}

describe("hostile input on the Segment-compatible listener (issue 15)", () => {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
  let api: RunningService;
  let worker: RunningService;
  let dlq: TopicProbe;
  let segmentUrl: string;
  let businessId: string;
  let otherBusiness: string;
  let writeKey: string;

  beforeAll(async () => {
    ({ businessId } = await createBusiness(admin));
    ({ businessId: otherBusiness } = await createBusiness(admin));
    writeKey = await createIngestKey(admin, businessId);
    dlq = await new TopicProbe(env.brokers, TOPICS.dlq).start();
    ({ api, worker, segmentUrl } = await startPipelineProcesses({
      brokers: env.brokers,
      groupPrefix: "segment-fuzz",
      env: { LOG_LEVEL: "warn" },
      apiEnv: { INGEST_INSTANCE_GROUP: `segment-fuzz-${randomUUID()}` },
    }));
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop(), dlq?.stop()]);
    await admin.end();
  });

  /** Gives every message a fresh messageId prefix (fast-check repeats small values; replays are other tests'). */
  function withFreshIds(body: unknown): unknown {
    const fresh = (m: unknown) =>
      m &&
      typeof m === "object" &&
      !Array.isArray(m) &&
      typeof (m as { messageId?: unknown }).messageId === "string"
        ? { ...m, messageId: `${randomUUID()}-${(m as { messageId: string }).messageId}` }
        : m;
    if (body && typeof body === "object" && Array.isArray((body as { batch?: unknown }).batch)) {
      return { ...body, batch: (body as { batch: unknown[] }).batch.map(fresh) };
    }
    return fresh(body);
  }

  async function send(c: Case): Promise<{ status: number; body: unknown } | "unsendable"> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    let body = typeof c.body === "string" ? c.body : withFreshIds(c.body);
    if (c.auth === "basic") headers.authorization = `Basic ${Buffer.from(`${writeKey}:`).toString("base64")}`;
    if (c.auth === "bad") headers.authorization = `Basic ${Buffer.from(`${c.badKey}:`).toString("base64")}`;
    if (c.auth === "body" && body && typeof body === "object" && !Array.isArray(body))
      body = { ...body, writeKey };
    const text = typeof body === "string" ? body : (JSON.stringify(body) ?? "null");
    if (c.gzip) headers["content-encoding"] = "gzip";
    let res: Response;
    try {
      res = await fetch(`${segmentUrl}/v1/${c.call}`, {
        method: "POST",
        headers,
        body: c.gzip ? gzipSync(text) : text,
      });
    } catch (error) {
      if (error instanceof TypeError && /header/i.test(String(error.message))) return "unsendable";
      throw error;
    }
    return { status: res.status, body: await res.json() };
  }

  it(`answers ${RUNS} arbitrary Segment requests with 200/400/413/429 (401 for bad keys), never 5xx, and applies every acceptance (seed ${SEED})`, async () => {
    const outcomes = new Map<string, number>();
    const count = (what: string) => outcomes.set(what, (outcomes.get(what) ?? 0) + 1);
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(requests(otherBusiness), async (c) => {
        const res = await send(c);
        if (res === "unsendable") return void count("unsendable");
        count(`${c.call} ${res.status}`);
        const detail = `${c.call} ${c.auth} ${JSON.stringify(c.body)?.slice(0, 300)} -> ${JSON.stringify(res.body)}`;
        const goodKey =
          c.auth !== "bad" &&
          !(
            c.auth === "body" &&
            (typeof c.body === "string" ||
              Array.isArray(c.body) ||
              c.body === null ||
              typeof c.body !== "object")
          );
        if (goodKey) expect(ALLOWED, detail).toContain(res.status);
        else expect(new Set([...ALLOWED, 401]), detail).toContain(res.status);
        if (res.status === 200) {
          const answer = res.body as { accepted: number; rejected: { code: string }[] };
          accepted += answer.accepted;
          for (const r of answer.rejected) count(`rejected ${r.code}`);
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );

    await poll(
      `all ${accepted} accepted messages applied`,
      async () => ((await eventCount(admin, businessId)) >= accepted ? true : undefined),
      { timeoutMs: 90_000 },
    );
    expect(await eventCount(admin, businessId)).toBe(accepted);
    expect(await eventCount(admin, otherBusiness)).toBe(0);
    const deadLetters = dlq.messages.filter((m) => m.key?.startsWith(`${businessId}:`));
    expect(deadLetters.map((m) => m.headers["error.message"])).toEqual([]);
    console.log(
      `[segment fuzz] seed ${SEED}, ${RUNS} requests, ${accepted} messages accepted and applied, 0 dead-lettered; outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`,
    );
  });
});
