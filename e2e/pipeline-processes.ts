import { TOPICS } from "@crm/kafka";
import { consumerGroupAtTopicEnd, freePort, type RunningService, startService } from "@crm/testing";

export interface PipelineProcesses {
  api: RunningService;
  worker: RunningService;
  /** The API's Segment listener (SEGMENT_PORT), on its own free port. */
  segmentUrl: string;
}

/**
 * A real ingest-api and resolver-worker, as the end-to-end tests use them: each on free ports, the worker in a
 * new consumer group at the raw topic's end, so what a test sends is not queued behind other tests' backlog.
 */
export async function startPipelineProcesses(options: {
  brokers: string[];
  groupPrefix: string;
  /** Environment of both processes on top of the stack's (e.g. LOG_LEVEL). */
  env?: Record<string, string>;
  apiEnv?: Record<string, string>;
}): Promise<PipelineProcesses> {
  const [apiPort, segmentPort, workerPort] = [await freePort(), await freePort(), await freePort()];
  const groupId = await consumerGroupAtTopicEnd(options.brokers, TOPICS.raw, options.groupPrefix);
  const [api, worker] = await Promise.all([
    startService({
      entry: "services/ingest-api/src/main.ts",
      env: {
        ...options.env,
        INGEST_PORT: String(apiPort),
        SEGMENT_PORT: String(segmentPort),
        ...options.apiEnv,
      },
      healthUrl: `http://127.0.0.1:${apiPort}/healthz`,
    }),
    startService({
      entry: "services/resolver-worker/src/main.ts",
      env: { ...options.env, WORKER_PORT: String(workerPort), WORKER_GROUP_ID: groupId },
      healthUrl: `http://127.0.0.1:${workerPort}/healthz`,
    }),
  ]);
  return { api, worker, segmentUrl: `http://127.0.0.1:${segmentPort}` };
}
