/**
 * The launcher's parts, for tests that need a private stack, broker or Connect worker they may kill (fault tests must
 * never stop the shared stack). Build settings with `stackSettings({ ...process.env, STACK_DIR, STACK_*_PORT })`.
 */
export { composeEndpoints, composeKafkaInitScript, writeComposeEnv } from "./compose-env.ts";
export {
  CONNECT_SECRET_ENV,
  type JvmPart,
  jvmLogFile,
  kafkaBrokerPort,
  kafkaBrokers,
  kafkaNodeIds,
  kafkaPartName,
  resolveJars,
  startConnect,
  startKafka,
  startKafkaNode,
  startRegistry,
  stopJvm,
} from "./jvm.ts";
export { credentialsOf, kafkaGrants, kafkaIsAuthenticated, kafkaSecrets } from "./kafka-auth.ts";
export { adminUrl, pgLogFile, startPostgres, stopPostgres } from "./postgres.ts";
export { ensureToolchain } from "./prereqs.ts";
export { type PrivateBroker, startPrivateBroker } from "./private-broker.ts";
export { isAlive, portOpen, readPid } from "./proc.ts";
export { minInsyncReplicas, replicationFactor, type StackSettings, stackSettings } from "./settings.ts";
export {
  type Part,
  signalPart,
  stackDown,
  stackIsUp,
  stackParts,
  stackStatus,
  stackUp,
} from "./stack.ts";
