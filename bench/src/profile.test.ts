import { describe, expect, it } from "vitest";
import { moduleOf, summarizeProfile } from "./profile.ts";

describe("profile summary", () => {
  it("names modules by package, builtin or repo path", () => {
    expect(moduleOf("file:///w/node_modules/kafkajs/src/x.js", "f")).toBe("kafkajs");
    expect(moduleOf("file:///w/node_modules/@hono/node-server/dist/a.js", "f")).toBe("@hono/node-server");
    expect(moduleOf("node:internal/streams/readable", "f")).toBe("node:internal/streams/readable");
    expect(moduleOf("file:///w/services/ingest-api/src/app.ts", "f")).toBe("services/ingest-api/src/app.ts");
    expect(moduleOf("", "(garbage collector)")).toBe("((garbage collector))");
  });

  it("attributes self time from samples and leaves idle out of the shares", () => {
    const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 });
    const summary = summarizeProfile({
      nodes: [
        { id: 1, callFrame: frame("(idle)", "") },
        { id: 2, callFrame: frame("send", "file:///w/node_modules/kafkajs/p.js") },
        { id: 3, callFrame: frame("parse", "file:///w/services/ingest-api/src/app.ts") },
      ],
      samples: [1, 1, 2, 2, 2, 3],
      timeDeltas: [1_000, 1_000, 1_000, 1_000, 1_000, 1_000],
      startTime: 0,
      endTime: 6_000,
    });
    expect(summary.idleShare).toBeCloseTo(0.333, 3);
    expect(summary.topModules[0]).toEqual({ module: "kafkajs", selfShare: 0.75 });
    expect(summary.topFunctions[1]?.name).toBe("parse src/app.ts:1");
  });
});
