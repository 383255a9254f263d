import fc from "fast-check";

// The arbitraries of the hostile-input fuzz tests (issue 11), shared by the tests of both listeners: what broke
// something once, or could, in every shape JSON can carry.

/** Characters that broke something once, or could: NUL, controls, format characters, surrogates, look-alikes. */
export const NASTY = [
  "\u0000",
  "\u0007",
  "\t",
  "\n",
  "\r",
  "\u007f",
  "\u0085",
  "\u00ad",
  "\u200b",
  "\u200d",
  "\u202e",
  "\u2066",
  "\ufeff",
  "\ud800",
  "\udfff",
  "\ud83d\ude00",
  "e\u0301",
  "ｎｕｌｌ",
  "null",
  "'; DROP TABLE crm_contacts; --",
  "\\",
  '"',
  "%00",
  "\u{10ffff}",
];

const utf16Units = fc
  .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 12 })
  .map((units) => String.fromCharCode(...units));
export const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
  { weight: 2, arbitrary: utf16Units },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.string({ maxLength: 8 }), fc.constantFrom(...NASTY), fc.string({ maxLength: 8 }))
      .map((parts) => parts.join("")),
  },
);
export const hostileNumber = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.bigInt().map((n) => Number(n)),
);

export const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    hostileString,
    hostileNumber,
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("tree"), { maxLength: 4 }),
    fc.dictionary(hostileString, tie("tree"), { maxKeys: 4 }),
  ),
}));
export const props = fc.dictionary(hostileString, tree, { maxKeys: 6 });

export const dateText = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .date({ min: new Date("2020-01-01"), max: new Date(), noInvalidDate: true })
      .map((d) => d.toISOString()),
  },
  fc.date({ noInvalidDate: false }).map((d) => (Number.isNaN(d.getTime()) ? "NaN" : d.toISOString())),
  fc.constantFrom(
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "1899-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z",
    "2026-11-27T10:00:00+25:00",
    "+275760-09-13T00:00:00Z",
  ),
  hostileString,
);

/** Mostly `benign` (arbitrary but storable-looking), sometimes `hostile`: accepted bodies must be common too. */
export const mostly = <T, U>(benign: fc.Arbitrary<T>, hostile: fc.Arbitrary<U>) =>
  fc.oneof({ weight: 4, arbitrary: benign }, { weight: 1, arbitrary: hostile });
export const graphemes = (maxLength: number) => fc.string({ unit: "grapheme", minLength: 1, maxLength });

/** Texts JSON.stringify never writes: Infinity once parsed, deep nesting, duplicate keys, a BOM, cut-off JSON. */
export function rawText(businessId: string) {
  const deep = (levels: number) => `{"type":"deep","props":${'{"a":'.repeat(levels)}1${"}".repeat(levels)}}`;
  return fc.oneof(
    fc.constantFrom(
      deep(33),
      deep(4_000),
      `{"type":"n","props":{"big":1e400,"tiny":1e-400,"neg":-0}}`,
      `{"type":"dup","type":"again","business_id":"${businessId}"}`,
      `\ufeff{"type":"bom"}`,
      `{"type":"cut`,
      `[${"[".repeat(20_000)}${"]".repeat(20_000)}]`,
      `{"type":"x","props":{"__proto__":{"polluted":true}}}`,
      "",
      "null",
    ),
    fc.string({ unit: "binary", maxLength: 200 }),
    tree.map((value) => JSON.stringify(value) ?? "null"),
  );
}
