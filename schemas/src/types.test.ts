import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { GENERATED_TYPES_FILE, generateTypes } from "./generate-types.ts";

describe("types derived from the JSON Schemas", () => {
  it("types.generated.ts is what the schemas generate (else: npm run generate -w @crm/schemas)", async () => {
    expect(readFileSync(GENERATED_TYPES_FILE, "utf8")).toBe(await generateTypes());
  });
});
