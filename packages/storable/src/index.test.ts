import { describe, expect, it } from "vitest";
import {
  eventIssues,
  jsonIssues,
  MAX_PROPS_DEPTH,
  MAX_TRAITS_BYTES,
  MAX_TRAITS_KEYS,
  textProblem,
  timestampProblem,
  traitsProblem,
} from "./index.ts";

function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
}

describe("textProblem", () => {
  it("accepts ordinary text, emoji and combining marks", () => {
    expect(textProblem("Zoë 🎉 e\u0301 日本")).toBeUndefined();
  });

  it("refuses NUL, C0 and C1 controls, DEL and lone surrogates", () => {
    expect(textProblem("M\u0000")).toBe("contains a NUL character");
    expect(textProblem("a\u0007")).toContain("U+0007");
    expect(textProblem("a\u007f")).toContain("U+007F");
    expect(textProblem("a\u0085")).toContain("U+0085");
    expect(textProblem("a\ud800")).toContain("surrogate");
    expect(textProblem("\udc00a")).toContain("surrogate");
  });

  it("allows tab and newline only where asked", () => {
    expect(textProblem("a\tb\r\nc")).toContain("U+0009");
    expect(textProblem("a\tb\r\nc", true)).toBeUndefined();
    expect(textProblem("a\u0000", true)).toBe("contains a NUL character");
  });
});

describe("jsonIssues", () => {
  it("names the path of a bad string, a bad key and a non-finite number", () => {
    const value = JSON.parse('{"a":["ok","x\\u0000"],"b\\u0001":1,"c":1e400}');
    expect(jsonIssues(value, { path: ["props"] })).toEqual(
      expect.arrayContaining([
        { path: ["props", "a", "1"], message: "string contains a NUL character" },
        { path: ["props", "b\u0001"], message: "key contains the control character U+0001" },
        { path: ["props", "c"], message: "number is out of range" },
      ]),
    );
  });

  it("refuses a __proto__ key, which an object parser would drop silently", () => {
    expect(jsonIssues(JSON.parse('{"__proto__":{"x":1}}'))).toEqual([
      { path: ["__proto__"], message: "key is reserved" },
    ]);
  });

  it("limits depth, iteratively: 100,000 levels cost no stack", () => {
    expect(jsonIssues(nested(MAX_PROPS_DEPTH))).toEqual([]);
    expect(jsonIssues(nested(MAX_PROPS_DEPTH + 1))).toHaveLength(1);
    const deep = JSON.parse(`${"[".repeat(100_000)}${"]".repeat(100_000)}`);
    expect(jsonIssues(deep)[0]?.message).toBe(`nested deeper than ${MAX_PROPS_DEPTH} levels`);
  });

  it("stops after maxIssues", () => {
    expect(
      jsonIssues(
        Array.from({ length: 100 }, () => "\u0000"),
        { maxIssues: 3 },
      ),
    ).toHaveLength(3);
  });
});

describe("eventIssues", () => {
  it("allows tab and newline in props values only", () => {
    const body = { type: "a\tb", contact: { name: "x\ny" }, props: { note: "line\nline\ttab" } };
    expect(eventIssues(body).map((i) => i.path.join("."))).toEqual(["type", "contact.name"]);
  });

  it("prefixes paths (batch items)", () => {
    expect(eventIssues({ props: { k: "\u0000" } }, ["events", "3"])[0]?.path).toEqual([
      "events",
      "3",
      "props",
      "k",
    ]);
  });

  it("leaves non-objects to the schema", () => {
    expect(eventIssues("text")).toEqual([]);
  });

  it("treats contact.traits as free data, like props; the identifiers keep the strict rules", () => {
    const body = {
      contact: {
        email: "a\n@x.io",
        traits: { bio: "two\nlines", address: { lines: [{ street: "x" }] }, bad: "\u0000" },
      },
    };
    expect(eventIssues(body).map((i) => i.path.join("."))).toEqual(["contact.email", "contact.traits.bad"]);
    expect(eventIssues({ contact: { traits: nested(MAX_PROPS_DEPTH + 1) } })[0]?.message).toMatch(/deeper/);
  });
});

describe("traitsProblem (issue 15)", () => {
  const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));

  it(`allows ${MAX_TRAITS_KEYS} keys and ${MAX_TRAITS_BYTES} bytes, not one more`, () => {
    expect(traitsProblem(keys(MAX_TRAITS_KEYS))).toBeUndefined();
    expect(traitsProblem(keys(MAX_TRAITS_KEYS + 1))).toMatch(/at most 200 keys/);
    const exact = { k: "x".repeat(MAX_TRAITS_BYTES - '{"k":""}'.length) };
    expect(Buffer.byteLength(JSON.stringify(exact))).toBe(MAX_TRAITS_BYTES);
    expect(traitsProblem(exact)).toBeUndefined();
    expect(traitsProblem({ k: `${exact.k}x` })).toMatch(/16384 bytes/);
  });

  it("counts bytes, not characters", () => {
    expect(traitsProblem({ k: "é".repeat(MAX_TRAITS_BYTES / 2) })).toMatch(/bytes/);
  });
});

describe("timestampProblem", () => {
  const now = Date.parse("2026-11-27T10:00:00Z");

  it("accepts ordinary dates, refuses year 0, pre-1900 and the far future", () => {
    expect(timestampProblem("2026-11-26T10:00:00Z", 86_400_000, now)).toBeUndefined();
    expect(timestampProblem("0000-01-01T00:00:00Z", 86_400_000, now)).toContain("1900");
    expect(timestampProblem("1899-12-31T23:59:59Z", 86_400_000, now)).toContain("1900");
    expect(timestampProblem("2026-11-29T10:00:00Z", 86_400_000, now)).toContain("24 h");
    expect(timestampProblem("not a date", undefined, now)).toBe("is not a valid date-time");
  });
});
