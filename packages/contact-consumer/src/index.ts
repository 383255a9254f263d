// A downstream team builds its credentials without depending on the internal kafka package.
export { type KafkaCredentials, kafkaCredentials } from "@crm/kafka";
export * from "./consumer.ts";
export * from "./decode-change.ts";
export * from "./decode-membership.ts";
export * from "./dedupe.ts";
