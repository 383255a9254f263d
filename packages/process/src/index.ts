export * from "./free-port.ts";
export * from "./health-server.ts";
export * from "./poll.ts";
export * from "./service-process.ts";
