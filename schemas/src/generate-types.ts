import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { compile } from "json-schema-to-typescript";
import { DOCUMENT_SCHEMAS, TOPIC_SCHEMAS } from "./index.ts";

/** Where the types derived from schemas/*.json are checked in. */
export const GENERATED_TYPES_FILE = fileURLToPath(new URL("./types.generated.ts", import.meta.url));

const BANNER = `// Generated from schemas/*.json by schemas/src/generate-types.ts (npm run generate -w @crm/schemas): do not edit.
// The JSON Schemas are the contract; types.test.ts fails when this file no longer matches them.`;

/** The TypeScript types of every topic's value and stored document, derived from its JSON Schema (one interface per schema title). */
export async function generateTypes(): Promise<string> {
  const parts: string[] = [];
  for (const [topic, schema] of Object.entries({ ...TOPIC_SCHEMAS, ...DOCUMENT_SCHEMAS })) {
    parts.push(
      await compile(structuredClone(schema) as Parameters<typeof compile>[0], topic, {
        bannerComment: "",
        style: { printWidth: 110, trailingComma: "all" },
      }),
    );
  }
  return `${BANNER}\n\n${parts.map((part) => part.trim()).join("\n\n")}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(GENERATED_TYPES_FILE, await generateTypes());
  console.log(`wrote ${GENERATED_TYPES_FILE}`);
}
