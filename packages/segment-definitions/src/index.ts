export * from "./cycles.ts";
export * from "./store.ts";
export * from "./validate.ts";
