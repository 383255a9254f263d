import { randomUUID } from "node:crypto";
import { poll } from "@crm/process";
import { signUserToken } from "@crm/testing";
import type { Scenario } from "../bench-run.ts";
import { say } from "../config.ts";
import { fmt } from "../report.ts";
import { summarize } from "../stats.ts";

/**
 * Scenario 7, erasure (issue 18; BENCH_ONLY=7, not in the default run): people of the main tenant, each three
 * contacts merged into one by four events, erased one after the other through the management API while nothing
 * else runs. Per erasure: the request's latency (its answer comes after the one transaction that removed every row
 * committed), a check that no row of the person is left, and the time until the `erased` change is on
 * contact.updated.v1 (the target: p95 < 5 s). Also the suppression check's cost per event on the worker's path:
 * the mean of many app.suppression_check calls (two identifiers each) inside one statement (no round trips),
 * against a business with suppressions.
 */
export const erasure: Scenario = {
  name: "scenario 7 erasure",
  selectedBy: [7],
  readsContactUpdates: true,
  async run(bench) {
    const { admin, env, tenants } = bench;
    const people = Number(process.env.BENCH_ERASURES ?? 20);
    const tenant = tenants.main;
    const updates = await bench.contactUpdates();
    const api = await bench.startApi("api-s7");
    const { worker } = await bench.startWorker("worker-s7");
    const owner = (await admin.query("SELECT owner_id FROM businesses WHERE id = $1", [tenant.businessId]))
      .rows[0].owner_id as string;
    const token = await signUserToken(env.JWT_SECRET!, owner, { expiresIn: "1h" });
    say(`scenario 7: ${people} erasures of merged people (3 contacts, 4 events each)`);
    const send = async (path: string, credential: string, body: unknown) => {
      const res = await fetch(`${bench.apiUrl}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      // biome-ignore lint/suspicious/noExplicitAny: the API's JSON answers
      return { status: res.status, body: (await res.json()) as any };
    };
    const requestMs: number[] = [];
    const onTopicMs: number[] = [];
    let leftovers = 0;
    await bench.phases.run("7 erasure", [api, worker], async () => {
      for (let i = 0; i < people; i++) {
        const id = randomUUID().slice(0, 12);
        const person = {
          external_id: `bench-ext-${id}`,
          email: `bench-${id}@example.com`,
          anonymous_id: `a-${id}`,
        };
        const contacts = [
          { external_id: person.external_id },
          { email: person.email },
          { anonymous_id: person.anonymous_id },
          person,
        ];
        let last = "";
        for (const contact of contacts) {
          const res = await send("/v1/track", tenant.key, { type: "bench", contact, props: {} });
          if (res.status !== 202) throw new Error(`track answered ${res.status}`);
          last = res.body.event_id;
          await poll(
            "event applied",
            async () =>
              (await admin.query("SELECT 1 FROM crm_events WHERE id = $1", [last])).rowCount || undefined,
            {
              timeoutMs: 30_000,
              intervalMs: 20,
            },
          );
        }
        const ids = (
          await admin.query(
            `WITH RECURSIVE t (id) AS (
               SELECT contact_id FROM contact_identities WHERE business_id = $1 AND type = 'email' AND value = $2
               UNION SELECT c.id FROM crm_contacts c JOIN t ON c.merged_into = t.id)
             SELECT array_agg(id)::text[] AS ids FROM t`,
            [tenant.businessId, person.email],
          )
        ).rows[0].ids as string[];
        const started = performance.timeOrigin + performance.now();
        const res = await send("/v1/manage/erasures", token, {
          business_id: tenant.businessId,
          email: person.email,
        });
        const answered = performance.timeOrigin + performance.now();
        if (res.status !== 200)
          throw new Error(`erasure answered ${res.status}: ${JSON.stringify(res.body)}`);
        requestMs.push(answered - started);
        const left = await admin.query(
          `SELECT (SELECT count(*) FROM crm_contacts WHERE id = ANY($1::uuid[]))
                + (SELECT count(*) FROM contact_identities WHERE contact_id = ANY($1::uuid[]))
                + (SELECT count(*) FROM crm_events WHERE contact_id = ANY($1::uuid[])) AS n`,
          [ids],
        );
        leftovers += Number(left.rows[0].n);
        const seen = await poll(
          "erased on contact.updated.v1",
          async () => updates.firstSeen.get(res.body.erasure.id),
          {
            timeoutMs: 60_000,
            intervalMs: 10,
          },
        );
        onTopicMs.push(seen - started);
      }
    });
    const gate = await gateCost(bench.admin, tenant.businessId);
    const request = summarize(requestMs);
    const onTopic = summarize(onTopicMs);
    say(
      `  erase request p50 ${fmt(request.p50)} / p95 ${fmt(request.p95)} ms; erased on topic p50 ${fmt(onTopic.p50)} / p95 ${fmt(onTopic.p95)} ms (target p95 < 5,000); rows left ${leftovers}; suppression check ${fmt(gate.perEventUs, 1)} µs/event`,
    );
    bench.results.erasure = {
      people,
      requestMs: request,
      erasedOnTopicMs: onTopic,
      rowsLeft: leftovers,
      gate,
    };
  },
};

/**
 * Server-side cost of app.suppression_check for one event carrying two identifiers (two probes), in a business
 * holding 1,000 suppressions: the mean over 5,000 calls in one transaction (rolled back).
 */
async function gateCost(
  admin: import("pg").Pool,
  businessId: string,
): Promise<{ perEventUs: number; calls: number; suppressions: number }> {
  const client = await admin.connect();
  try {
    await client.query("BEGIN");
    await client.query(
      `INSERT INTO suppressed_identifiers (business_id, hash, erasure_id)
       SELECT $1::uuid, encode(sha256(convert_to(g::text || $1::uuid::text, 'UTF8')), 'hex'), gen_random_uuid()
       FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING`,
      [businessId],
    );
    // 10 rounds of 500 calls
    let totalUs = 0;
    for (let round = 0; round < 10; round++) {
      await client.query("SAVEPOINT gate");
      const { rows } = await client.query<{ us: number }>(
        `SELECT (extract(epoch FROM clock_timestamp() - t0) * 1e6)::float8 AS us FROM (
           SELECT clock_timestamp() AS t0, (SELECT count(app.suppression_check(gen_random_uuid(), e, ARRAY[e, e],
             ARRAY[$1::uuid, $1::uuid], ARRAY[md5(g::text) || md5(g::text || 'a'), md5(g::text) || md5(g::text || 'b')]))
            FROM generate_series($2::int * 500 + 1, $2::int * 500 + 500) g, gen_random_uuid() e) AS n) AS x`,
        [businessId, round],
      );
      totalUs += rows[0]!.us;
      await client.query("ROLLBACK TO SAVEPOINT gate");
    }
    return { perEventUs: totalUs / 5000, calls: 5000, suppressions: 1000 };
  } finally {
    await client.query("ROLLBACK").catch(() => {});
    client.release();
  }
}
