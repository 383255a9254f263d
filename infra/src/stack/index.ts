/**
 * The launcher's parts, for tests that need a private broker or Connect worker they may kill (fault tests must
 * never stop the shared stack). Build settings with `stackSettings({ ...process.env, STACK_DIR, STACK_*_PORT })`.
 */
export { jvmLogFile, resolveJars, startConnect, startKafka, startRegistry, stopJvm } from "./jvm.ts";
export { ensureToolchain } from "./prereqs.ts";
export { isAlive, portOpen, readPid } from "./proc.ts";
export { type StackSettings, stackSettings } from "./settings.ts";
