export * from "./prepare.ts";
