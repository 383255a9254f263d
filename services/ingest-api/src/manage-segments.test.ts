import { createPool } from "@crm/db";
import { createLogger } from "@crm/logger";
import { signUserToken } from "@crm/testing";
import { describe, expect, it } from "vitest";
import { createApp } from "./app.ts";
import type { TenantDirectory } from "./tenant-directory.ts";
import { FakeProducer, MemoryIdempotency } from "./test-fakes.ts";

// The management API's edge without a stack: credentials, tenant choice, refusals before any statement, and a
// database that does not answer (a pool on a closed port).
const SECRET = "unit-test-secret-0123456789abcdef";
const USER = "11111111-1111-4111-8111-111111111111";
const ONE = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const TWO = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

function setup(businesses: string[]) {
  const directory: TenantDirectory = {
    businessesOfUser: async () =>
      businesses.map((businessId) => ({ businessId, plan: "standard", defaultCountry: "US" })),
    businessOfKey: async () => undefined,
  };
  const db = createPool({
    connectionString: "postgres://nobody:nothing@127.0.0.1:1/none",
    applicationName: "unit",
  });
  const app = createApp({
    producer: new FakeProducer(),
    directory,
    idempotency: new MemoryIdempotency(),
    jwt: { secret: SECRET, audience: "authenticated", algorithms: ["HS256"] },
    logger: createLogger("unit", { level: "silent" }),
    logHashSecret: "unit-log-hash-secret-0123456789",
    db,
  });
  return { app, db };
}

async function call(app: ReturnType<typeof setup>["app"], method: string, path: string, body?: unknown) {
  const res = await app.request(path, {
    method,
    headers: {
      authorization: `Bearer ${await signUserToken(SECRET, USER)}`,
      "content-type": "application/json",
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return {
    status: res.status,
    headers: res.headers,
    body: (await res.json()) as { ok: boolean; error?: { code: string } },
  };
}

const definition = { no_event: { type: "login", last_days: 14 } };

describe("management API edge (fakes)", () => {
  it("asks a caller of several businesses to name one, refuses others' and bad ids before any statement", async () => {
    const { app, db } = setup([ONE, TWO]);
    try {
      expect((await call(app, "GET", "/v1/manage/segments")).body.error?.code).toBe("business_required");
      expect((await call(app, "GET", `/v1/manage/segments?business_id=${USER}`)).body.error?.code).toBe(
        "forbidden_business",
      );
      expect((await call(app, "GET", "/v1/manage/segments?business_id=nope")).status).toBe(400);
      const bad = await call(app, "POST", "/v1/manage/segments", {
        business_id: ONE,
        name: "n",
        definition: {},
      });
      expect(bad).toMatchObject({ status: 400, body: { error: { code: "invalid_request" } } });
    } finally {
      await db.end();
    }
  });

  it("answers 503 unavailable with Retry-After when Postgres does not answer, never 500", async () => {
    const { app, db } = setup([ONE]);
    try {
      const res = await call(app, "POST", "/v1/manage/segments", { name: "n", definition });
      expect(res).toMatchObject({ status: 503, body: { ok: false, error: { code: "unavailable" } } });
      expect(res.headers.get("retry-after")).toBe("1");
      expect((await call(app, "GET", "/v1/manage/segments")).status).toBe(503);
    } finally {
      await db.end();
    }
  });
});
