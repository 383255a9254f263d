/**
 * kafkajs 2.2.4 schedules its request-queue check with `setTimeout(fn, throttledUntil - Date.now())` while
 * `throttledUntil` is -1, and Node 24 warns about every negative delay (tulios/kafkajs#1751, fix unmerged): a
 * `TimeoutNegativeWarning` on stderr for each client. The behaviour is Node's documented one (the delay becomes
 * 1 ms), so only that warning is dropped; every other warning is emitted as before.
 */
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const type = typeof rest[0] === "string" ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
  if (type === "TimeoutNegativeWarning") return;
  (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;
