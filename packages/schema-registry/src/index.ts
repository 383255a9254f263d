export * from "./client.ts";
export * from "./compatibility.ts";
export * from "./validate.ts";
