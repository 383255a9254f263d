export * from "./definitions.ts";
export * from "./store.ts";
export * from "./webhook-secret.ts";
