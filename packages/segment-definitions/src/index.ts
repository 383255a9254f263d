export * from "./cycles.ts";
export * from "./validate.ts";
