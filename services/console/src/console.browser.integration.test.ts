import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import { partitionKey } from "@crm/identity";
import { poll } from "@crm/process";
import { createBusiness, signUserToken, testEnv } from "@crm/testing";
import pg from "pg";
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  adminKafka,
  type ConsoleProcesses,
  type ConsoleTopics,
  createConsoleTopics,
  createIngestKey,
  dropConsoleTopics,
  startConsoleProcesses,
} from "./test-harness.ts";

// The console in a real browser (Debian's chromium driven by playwright-core) against the real stack: a real
// ingest-api and resolver-worker on private topics, the console reading them. Each page is screenshotted into
// docs/screenshots/ for the README.
const env = testEnv();
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = join(repoRoot(), "docs", "screenshots");
const admin = new pg.Pool({ connectionString: env.adminUrl, max: 3 });
const operatorToken = process.env.CONSOLE_OPERATOR_TOKEN ?? "";

let topics: ConsoleTopics;
let procs: ConsoleProcesses;
let browser: Browser;
let operator: BrowserContext;
let page: Page;
let businessA: { businessId: string; ownerId: string };
let businessB: { businessId: string; ownerId: string };
let keyA: string;
const producer = adminKafka(env.brokers).producer();

/** The rendered text of an element (Playwright's innerText; biome's DOM rule mistakes the Locator for a node). */
// biome-ignore lint/performance/useDomNodeTextContent: a Playwright Locator, whose textContent ignores layout
const textOf = (locator: Locator) => locator.innerText();
const url = (path: string) => `${procs.consoleUrl}${path}`;
// Pages whose length grows with the stack's history (the audit trail, a topic) are taken at the window's size.
const shot = (p: Page, name: string, fullPage = true) =>
  p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });

async function send(events: Record<string, unknown>[]): Promise<string[]> {
  const res = await fetch(`${procs.ingestUrl}/v1/batch`, {
    method: "POST",
    headers: { authorization: `Bearer ${keyA}`, "content-type": "application/json" },
    body: JSON.stringify({ events }),
  });
  const body = (await res.json()) as { results: { ok: boolean; event_id: string }[] };
  expect(res.status).toBe(202);
  return body.results.map((r) => r.event_id);
}

const applied = async (eventIds: string[]) =>
  Number(
    (await admin.query("SELECT count(*) FROM crm_events WHERE id = ANY($1::uuid[])", [eventIds])).rows[0]
      .count,
  );

async function signIn(context: BrowserContext, token: string): Promise<Page> {
  const p = await context.newPage();
  await p.goto(url("/"));
  await p.waitForURL(/\/sign-in/);
  await p.fill("#token", token);
  await p.keyboard.press("Enter");
  await p.waitForURL((u) => !u.pathname.startsWith("/sign-in"));
  return p;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
  mkdirSync(SHOTS, { recursive: true });
  expect(operatorToken.length).toBeGreaterThan(20);
  topics = await createConsoleTopics(env.brokers);
  businessA = await createBusiness(admin);
  businessB = await createBusiness(admin);
  keyA = await createIngestKey(admin, businessA.businessId);
  await producer.connect();
  procs = await startConsoleProcesses(topics);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  operator = await browser.newContext({ viewport: { width: 1280, height: 900 } });
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await Promise.all([procs?.api.stop(), procs?.worker.stop(), procs?.console.stop()]);
  await producer.disconnect().catch(() => {});
  if (topics) await dropConsoleTopics(env.brokers, topics);
  await admin.end();
});

describe("the ops console in a browser", () => {
  it("signs the operator in, and refuses a wrong token", async () => {
    const p = await operator.newPage();
    await p.goto(url("/contacts"));
    await p.waitForURL(/\/sign-in\?next=%2Fcontacts/);
    await shot(p, "sign-in");
    await p.fill("#token", "op_not-the-token-at-all-000000000");
    await p.keyboard.press("Enter");
    expect(await textOf(p.locator("[role=alert]"))).toContain("not valid");
    await p.fill("#token", operatorToken);
    await p.keyboard.press("Enter");
    await p.waitForURL(/\/contacts$/);
    expect(await textOf(p.locator("header .who"))).toContain("operator");
    const cookies = await operator.cookies();
    const session = cookies.find((c) => c.name === "crm_console");
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe("Strict");
    page = p;
  });

  it("shows non-zero accepted, applied and published rates while traffic flows", async () => {
    await page.goto(url("/"));
    // keyboard first: the first Tab reaches the skip link, which lands on the content
    await page.keyboard.press("Tab");
    expect(await textOf(page.locator(":focus"))).toBe("Skip to content");
    let sending = true;
    const traffic = (async () => {
      while (sending) {
        await send(
          Array.from({ length: 20 }, (_, i) => ({
            type: "page_view",
            contact: { external_id: `traffic-${i}-${randomUUID().slice(0, 6)}` },
          })),
        );
        await new Promise((resolve) => setTimeout(resolve, 400));
      }
    })();
    try {
      // No reload: the page's own polling swaps the live part in (issue 19.2 "updates live").
      await poll(
        "the overview shows traffic at every stage",
        async () => {
          const rates = await page
            .locator("[data-rate]")
            .evaluateAll((els) =>
              Object.fromEntries(els.map((el) => [el.getAttribute("data-rate"), Number(el.textContent)])),
            );
          return rates.accepted! > 0 && rates.applied! > 0 && rates.published! > 0 ? rates : undefined;
        },
        { timeoutMs: 90_000, intervalMs: 1_000 },
      );
    } finally {
      sending = false;
      await traffic;
    }
    const text = await textOf(page.locator("main"));
    expect(text).toContain("ingest-api");
    expect(text).toMatch(/segments\s+not running/);
    expect(text).toMatch(/crm_outbox/);
    expect(await page.locator("svg.chart polyline").count()).toBeGreaterThan(0);
    expect(await textOf(page.locator("#lag"))).toContain(topics.groupId);
    await shot(page, "overview");
  });

  it("lists a poison message; replaying it unfixed dead-letters it again, and it stays listed", async () => {
    const poisonKey = `${businessA.businessId}:event:${randomUUID()}`;
    await producer.send({
      topic: topics.rawTopic,
      acks: -1,
      messages: [{ key: poisonKey, value: "{not json" }],
    });
    const first = await poll(
      "the poison message on the dead-letter page",
      async () => {
        await page.goto(url("/dead-letters"));
        const row = page.locator("#dead-letters tr", { hasText: "not JSON" });
        return (await row.count()) === 1 ? await row.getAttribute("data-id") : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
    await page.locator(`input[name=ids][value="${first}"]`).check();
    await page.getByRole("button", { name: "Replay selected" }).click();
    await page.waitForURL(/done=1\+replayed/);
    await poll(
      "the replayed poison dead-lettered a second time",
      async () => {
        await page.goto(url("/dead-letters?status=all"));
        const again = page.locator("#dead-letters tr", {
          hasText: `replay of ${first!.split(":").slice(-2).join("@")}`,
        });
        return (await again.count()) === 1 ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
    const original = page.locator(`#dead-letters tr[data-id="${first}"] td.status`);
    expect(await textOf(original)).toContain("replayed");
    expect(await textOf(original)).toContain("operator");
    // the trail names who replayed which message
    await page.goto(url("/audit"));
    expect(await textOf(page.locator("#audit"))).toContain(first!);
    await shot(page, "audit", false);
  });

  it("replays a valid dead-lettered event once its cause is fixed, and it is applied exactly once", async () => {
    // An event of a business that does not exist yet: the worker refuses it (unknown business) into the DLQ.
    const lateBusiness = randomUUID();
    const eventId = randomUUID();
    const contact = { email: `late-${eventId.slice(0, 8)}@example.com` };
    const event = (id: string, type: string) => ({
      event_id: id,
      business_id: lateBusiness,
      type,
      contact,
      props: {},
      occurred_at: new Date().toISOString(),
      received_at: new Date().toISOString(),
      source: { kind: "ingest_key", id_hash: "test" },
    });
    const key = partitionKey(lateBusiness, contact, eventId);
    await producer.send({
      topic: topics.rawTopic,
      acks: -1,
      messages: [{ key, value: JSON.stringify(event(eventId, "signup")) }],
    });
    const id = await poll(
      "the valid event dead-lettered",
      async () => {
        await page.goto(url("/dead-letters"));
        const row = page.locator(`#dead-letters tr[data-event="${eventId}"]`);
        return (await row.count()) === 1 ? await row.getAttribute("data-id") : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
    expect(await textOf(page.locator(`#dead-letters tr[data-id="${id}"]`))).toContain("unknown business");
    await admin.query("INSERT INTO businesses (id, name, owner_id) VALUES ($1, 'late', $2)", [
      lateBusiness,
      randomUUID(),
    ]);
    // replayed twice (two operators, a double click): applied once
    for (let i = 0; i < 2; i++) {
      await page.goto(url("/dead-letters?status=all"));
      await page.locator(`input[name=ids][value="${id}"]`).check();
      await page.getByRole("button", { name: "Replay selected" }).click();
      await page.waitForURL(/done=1\+replayed/);
    }
    // a later event on the same key lands on the same partition after both replays
    const marker = randomUUID();
    await producer.send({
      topic: topics.rawTopic,
      acks: -1,
      messages: [{ key, value: JSON.stringify(event(marker, "marker")) }],
    });
    await poll("the marker applied", async () => ((await applied([marker])) === 1 ? true : undefined), {
      timeoutMs: 60_000,
    });
    expect(await applied([eventId])).toBe(1);
    await page.goto(url("/dead-letters?status=all"));
    await shot(page, "dead-letters");
  });

  it("finds a contact by a differently written phone and shows the merge with its cause event", async () => {
    const tag = randomUUID().slice(0, 8);
    const email = `merge-${tag}@example.com`;
    const digits = String(Math.floor(1_000_000 + Math.random() * 8_999_999));
    const phone = `+1555${digits}`;
    const [e1, e2] = await send([
      { type: "signup", contact: { email, name: "Merge Person" } },
      { type: "call", contact: { phone } },
    ]);
    await poll("both contacts created", async () => ((await applied([e1!, e2!])) === 2 ? true : undefined), {
      timeoutMs: 60_000,
    });
    const [e3] = await send([{ type: "linked", contact: { email, phone } }]);
    await poll("the merge applied", async () => ((await applied([e3!])) === 1 ? true : undefined), {
      timeoutMs: 60_000,
    });
    const { rows } = await admin.query("SELECT contact_id FROM contact_identities WHERE value = $1", [email]);
    const survivor = rows[0].contact_id as string;

    await page.goto(url("/contacts"));
    await page.fill("#q", `+1 (555) ${digits.slice(0, 3)}-${digits.slice(3)}`);
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/contacts\?q=/);
    const link = page.locator("#hits a");
    expect(await link.count()).toBe(1);
    await shot(page, "contact-search");
    await link.click();
    await page.waitForURL(new RegExp(`/contacts/${survivor}$`));
    const merges = await textOf(page.locator("#merge-history"));
    expect(merges).toContain(e3!);
    expect(merges).toContain("linked");
    // masked by default; a reveal is an explicit, recorded POST
    expect(await textOf(page.locator("td[data-pii=email]"))).not.toContain(email);
    await page.getByRole("button", { name: "Reveal email" }).click();
    expect(await textOf(page.locator("td[data-pii=email]"))).toBe(email);
    const trail = await admin.query("SELECT actor, target FROM console_audit WHERE contact_id = $1", [
      survivor,
    ]);
    expect(trail.rows).toEqual([{ actor: "operator", target: "reveal:email" }]);
    await page.goto(url(`/contacts/${survivor}`));
    await shot(page, "contact");
    const phoneView = await browser.newContext({
      viewport: { width: 390, height: 844 },
      storageState: await operator.storageState(),
    });
    const small = await phoneView.newPage();
    await small.goto(url(`/contacts/${survivor}`));
    await shot(small, "contact-phone");
    await phoneView.close();
    await page.goto(url(`/topics/${encodeURIComponent(topics.rawTopic)}?limit=5`));
    expect(await page.locator("#messages tr").count()).toBeGreaterThan(0);
    expect(await textOf(page.locator("#messages"))).not.toContain(email);
    await shot(page, "topic-messages", false);
    await page.goto(url("/topics"));
    await shot(page, "topics");
  });

  it("shows a business owner their business only", async () => {
    const ownerA = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const ownerB = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const pageA = await signIn(ownerA, await signUserToken(env.jwtSecret, businessA.ownerId));
    const pageB = await signIn(ownerB, await signUserToken(env.jwtSecret, businessB.ownerId));
    const { rows } = await admin.query(
      "SELECT c.id, i.value FROM crm_contacts c JOIN contact_identities i ON i.contact_id = c.id WHERE c.business_id = $1 AND i.type = 'email' LIMIT 1",
      [businessA.businessId],
    );
    const { id, value } = rows[0] as { id: string; value: string };
    for (const [p, sees] of [
      [pageA, true],
      [pageB, false],
    ] as const) {
      await p.goto(url(`/contacts?q=${encodeURIComponent(value)}`));
      expect(await p.locator("#hits a").count()).toBe(sees ? 1 : 0);
      const res = await p.goto(url(`/contacts/${id}`));
      expect(res?.status()).toBe(sees ? 200 : 404);
      await p.goto(url("/dead-letters?status=all"));
      // business A's poison (keyed by A) is A's alone
      expect(await p.locator("#dead-letters tr", { hasText: "not JSON" }).count()).toBe(sees ? 2 : 0);
      await p.goto(url(`/topics/${encodeURIComponent(topics.rawTopic)}?limit=50`));
      const text = await textOf(p.locator("main"));
      expect(text.includes(businessA.businessId)).toBe(sees);
      await p.goto(url("/audit"));
      expect(await p.locator("#audit tr", { hasText: "reveal" }).count()).toBe(sees ? 1 : 0);
    }
    await pageB.goto(url("/"));
    await shot(pageB, "overview-business-owner");
    await ownerA.close();
    await ownerB.close();
  });
});
