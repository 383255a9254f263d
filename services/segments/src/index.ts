export * from "./apply-results.ts";
export * from "./decode-trigger.ts";
export * from "./env.ts";
