import { createLogger } from "@crm/logger";
import { describe, expect, it } from "vitest";
import { type ConsoleDeps, createApp } from "./app.ts";
import { Sessions } from "./session.ts";

// The HTTP edge without a stack: sign-in redirects, error shapes. Everything behind it is tested against the real
// stack (api.integration.test.ts, console.browser.integration.test.ts).
const operatorToken = `op_${"x".repeat(30)}`;
const brokerDown = () => {
  const error = new Error("Connection error: connect ECONNREFUSED");
  error.name = "KafkaJSConnectionError";
  throw error;
};
const deps = {
  sessions: new Sessions("s".repeat(40), 3_600),
  operatorToken,
  directory: { businessesOfUser: async () => [], businessOfKey: async () => undefined },
  authenticator: {
    authenticate: async () => {
      throw new Error("unused");
    },
    verifiedRecently: () => false,
  },
  kafka: { admin: () => ({ connect: brokerDown, disconnect: async () => {} }) },
  rawTopic: "events.raw.v1",
  dlqTopic: "events.dlq.v1",
  topics: [],
  logger: createLogger("console-test", { level: "silent" }),
} as unknown as ConsoleDeps;
const app = createApp(deps);
const operator = { authorization: `Bearer ${operatorToken}` };

describe("the console's edge", () => {
  it("sends a page without a session to the sign-in form, and answers the API with 401", async () => {
    const page = await app.request("/dead-letters");
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toBe("/sign-in?next=%2Fdead-letters");
    const api = await app.request("/api/dead-letters");
    expect(api.status).toBe(401);
    expect(await api.json()).toEqual({
      ok: false,
      error: { code: "unauthorized", message: "sign in first" },
    });
  });

  it("answers 503 when Kafka is unreachable, never 500", async () => {
    const res = await app.request("/api/topics", { headers: operator });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unavailable");
    const page = await app.request("/topics", { headers: operator });
    expect(page.status).toBe(503);
    expect(page.headers.get("content-type")).toMatch(/text\/html/);
  });

  it("sets the headers that keep the pages out of frames and caches", async () => {
    const res = await app.request("/sign-in");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
  });
});
