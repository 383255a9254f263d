export * from "./client.ts";
export * from "./compatibility.ts";
export * from "./framing.ts";
export * from "./validate.ts";
