export * from "./consumer.ts";
export * from "./decode-change.ts";
export * from "./dedupe.ts";
