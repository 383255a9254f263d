export * from "./compile-sql.ts";
export * from "./cycles.ts";
export * from "./evaluate.ts";
export * from "./store.ts";
export * from "./validate.ts";
