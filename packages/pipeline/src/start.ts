import { join } from "node:path";
import { stackDown, stackSettings } from "@crm/infra/stack";
import { TOPICS } from "@crm/kafka";
import { ServiceProcess, stopAllServices } from "@crm/process";
import { moveGroupToTopicEnd } from "@crm/testing";
import { runDemo } from "./demo.ts";
import { runAutomationsDemo } from "./demo-automations.ts";
import { startLiveSummary, workersLag } from "./live-summary.ts";
import { preparePipeline } from "./prepare.ts";
import { runSegmentsDemo } from "./segments-demo.ts";

/*
 * `npm start`: the whole pipeline with a demo. Prepares the pipeline (the stack up unless it is already), starts
 * ingest-api and resolver-worker with their logs in .stack/logs/, runs the demo step by step, then shows a live
 * one-line summary until Ctrl-C, which stops what it started (the stack only if it was not running before).
 */

const say = (line: string) => console.log(`[demo] ${line}`);

async function main(): Promise<void> {
  const s = stackSettings();
  const { env, startedStack } = await preparePipeline({ settings: s });
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    summary?.stop();
    say("stopping the services...");
    await stopAllServices();
    if (startedStack) await stackDown(s, (line) => say(`stack: ${line}`));
    process.exit(code);
  };
  let summary: { stop: () => void } | undefined;
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));

  const logFile = (name: string) => join(s.logs, `${name}.log`);
  const api = new ServiceProcess({
    name: "ingest-api",
    entry: "services/ingest-api/src/main.ts",
    env: {},
    healthUrl: `${env.INGEST_URL}/healthz`,
    output: { file: logFile("ingest-api") },
  });
  // Cluster mode runs two workers in one consumer group (partitions split between them); START_WORKERS overrides.
  const workerCount = Number(process.env.START_WORKERS ?? (process.env.STACK_MODE === "cluster" ? 2 : 1));
  const workers = Array.from({ length: workerCount }, (_, i) => {
    const port = Number(env.WORKER_PORT) + i;
    const name = workerCount === 1 ? "resolver-worker" : `resolver-worker-${i + 1}`;
    return new ServiceProcess({
      name,
      entry: "services/resolver-worker/src/main.ts",
      env: { WORKER_PORT: String(port) },
      healthUrl: `http://127.0.0.1:${port}/healthz`,
      output: { file: logFile(name) },
    });
  });
  // The ops console (services/console): pages for the pipeline, its topics, dead letters and any contact's story.
  const opsConsole = new ServiceProcess({
    name: "console",
    entry: "services/console/src/main.ts",
    env: {},
    healthUrl: `${env.CONSOLE_URL}/healthz`,
    output: { file: logFile("console") },
  });
  const segments = new ServiceProcess({
    name: "segments",
    entry: "services/segments/src/main.ts",
    env: {},
    healthUrl: `${env.SEGMENTS_URL}/healthz`,
    output: { file: logFile("segments") },
  });
  // Delivers webhooks; the demo's receiver is on loopback, which only this development setting allows.
  const automations = new ServiceProcess({
    name: "automations",
    entry: "services/automations/src/main.ts",
    env: { AUTOMATIONS_ALLOW_PRIVATE_TARGETS: "1" },
    healthUrl: `${env.AUTOMATIONS_URL}/readyz`,
    output: { file: logFile("automations") },
  });
  const services = [api, ...workers, segments, automations, opsConsole];
  try {
    if (process.env.START_FROM_END === "1") await skipBacklog(env, say);
    await Promise.all(services.map((service) => service.start()));
    say(
      `services up; their logs: ${services.map((service) => logFile(service.name)).join(", ")}` +
        " (npm run stack -- logs <name> [-f])",
    );
    const ownerToken = await runDemo(env, say, () => workersLag(workers));
    await runSegmentsDemo(env, say, ownerToken);
    await runAutomationsDemo(env, say, ownerToken);

    say("");
    say(
      `pipeline running. API ${env.INGEST_URL}, worker metrics ${env.WORKER_URL}/metrics, segments metrics ${env.SEGMENTS_URL}/metrics, Connect ${env.CONNECT_URL}`,
    );
    say(`try: curl -X POST ${env.INGEST_URL}/v1/track -H 'authorization: Bearer ${ownerToken}' \\`);
    say(
      `       -H 'content-type: application/json' -d '{"type":"hello","contact":{"email":"you@example.com"}}'`,
    );
    say(
      `Segment / RudderStack SDKs: host (dataPlaneUrl) ${env.SEGMENT_URL ?? "http://127.0.0.1:8082"}, write key = an ingest key` +
        ` (npm run ingest-keys -- create <business_id>); refused messages: npm run rejected-events -- list <business_id>`,
    );
    say(
      `ops console ${env.CONSOLE_URL}: sign in with the operator token, ` +
        `grep ^CONSOLE_OPERATOR_TOKEN= ${join(s.dir, "env")} | cut -d= -f2-` +
        " (or a business owner's JWT, such as the token above, to see one business)",
    );
    say(
      `Ctrl-C stops the services${startedStack ? " and the stack" : " (the stack was already running and stays up)"}.`,
    );
  } catch (error) {
    console.error(`[demo] ${(error as Error).message}`);
    await stop(1);
    return;
  }
  if (process.env.DEMO_EXIT === "1") return stop(0);
  summary = startLiveSummary({ api, workers });
}

/**
 * START_FROM_END=1: the workers' group starts at the end of events.raw.v1 (and the segments service's at the end of
 * contact.updated.v1 and events.applied.v1). What tests, load probes and fuzzers left
 * there was applied by their own workers; the development group would otherwise work through all of it (often
 * hundreds of thousands of events) before the demo's first event.
 */
async function skipBacklog(env: Record<string, string>, say: (line: string) => void): Promise<void> {
  const groupId = process.env.WORKER_GROUP_ID ?? "resolver-worker";
  await moveGroupToTopicEnd(env.KAFKA_BROKERS!.split(","), TOPICS.raw, groupId);
  say(`START_FROM_END=1: consumer group ${groupId} moved to the end of ${TOPICS.raw}`);
  // The segments service's triggers too (its state is recomputed from Postgres by its jobs, not from the backlog).
  const segmentsGroup = process.env.SEGMENTS_GROUP_ID ?? "segments";
  for (const topic of [TOPICS.contactUpdated, TOPICS.eventsApplied]) {
    await moveGroupToTopicEnd(env.KAFKA_BROKERS!.split(","), topic, segmentsGroup);
  }
  say(`START_FROM_END=1: consumer group ${segmentsGroup} moved to the end of its trigger topics`);
}

main().catch((error) => {
  console.error(`[demo] ${(error as Error).message}`);
  void stopAllServices().finally(() => process.exit(1));
});
