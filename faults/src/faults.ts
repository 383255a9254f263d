import {
  kafkaPartName,
  type StackSettings,
  signalPart,
  startConnect,
  startKafkaNode,
  startPostgres,
  stopPostgres,
} from "@crm/infra/stack";
import { poll, type ServiceProcess } from "@crm/process";
import type { LoadDriver } from "./load.ts";

type Toolchain = Parameters<typeof startConnect>[1];

export interface FaultContext {
  s: StackSettings;
  tools: Toolchain;
  api: ServiceProcess;
  workers: ServiceProcess[];
  load: LoadDriver;
  workerSessionTimeoutMs: number;
  log: (line: string) => void;
}

/** One fault of the list: what to break, how long to leave it broken, and how to repair it. */
export interface Fault {
  name: string;
  inject: (ctx: FaultContext) => Promise<string | undefined>;
  holdMs: (ctx: FaultContext) => number;
  clear: (ctx: FaultContext) => Promise<void>;
  /** The API must answer no 202 while the fault holds (it cannot persist anything). */
  apiMustRefuse?: boolean;
}

function kill(ctx: FaultContext, part: string): void {
  const pid = signalPart(ctx.s, part as Parameters<typeof signalPart>[1], "SIGKILL");
  if (pid === undefined) throw new Error(`${part} was not running when the fault was due`);
}

export const FAULTS: Fault[] = [
  {
    name: "worker SIGKILL",
    inject: async ({ workers }) => {
      await workers[0]!.kill();
      return `killed ${workers[0]!.name}`;
    },
    holdMs: () => 2_000,
    clear: ({ workers }) => workers[0]!.start(),
  },
  {
    name: "worker SIGSTOP > session",
    inject: async ({ workers }) => {
      workers[1]!.signal("SIGSTOP");
      return `stopped ${workers[1]!.name}`;
    },
    // Past the session timeout: the group evicts the frozen member and hands its partitions to the other one,
    // which then applies events the frozen one may still hold in memory and try to commit after SIGCONT.
    holdMs: ({ workerSessionTimeoutMs }) => workerSessionTimeoutMs + 5_000,
    clear: async ({ workers }) => workers[1]!.signal("SIGCONT"),
  },
  {
    name: "kafka node SIGKILL",
    inject: async (ctx) => {
      kill(ctx, kafkaPartName(ctx.s, 2));
      return "killed kafka-2";
    },
    holdMs: () => 5_000,
    clear: ({ s, tools }) => startKafkaNode(s, tools, 2),
  },
  {
    name: "two kafka nodes down",
    inject: async (ctx) => {
      kill(ctx, kafkaPartName(ctx.s, 1));
      kill(ctx, kafkaPartName(ctx.s, 3));
      return "killed kafka-1 and kafka-3";
    },
    holdMs: () => 12_000,
    // Both at once: a lone node cannot form the controller quorum, so starting them one by one would wait forever.
    clear: async ({ s, tools }) => {
      await Promise.all([startKafkaNode(s, tools, 1), startKafkaNode(s, tools, 3)]);
    },
    apiMustRefuse: true,
  },
  {
    name: "postgres stop -m immediate",
    inject: async ({ s }) => {
      await stopPostgres(s, "immediate");
      return "pg_ctl stop -m immediate";
    },
    holdMs: () => 5_000,
    clear: ({ s, tools, log }) => startPostgres(s, tools, log),
  },
  {
    name: "connect SIGKILL",
    inject: async (ctx) => {
      kill(ctx, "connect");
      return "killed connect";
    },
    holdMs: () => 3_000,
    clear: ({ s, tools }) => startConnect(s, tools),
  },
  {
    name: "ingest-api SIGKILL",
    inject: async ({ api, load }) => {
      // Kill while keyed requests are in flight, so their retries meet the idempotency lease of the dead process.
      await poll("keyed requests in flight", () => load.stats().inFlightKeyed > 0, {
        timeoutMs: 3_000,
        intervalMs: 2,
        throwOnTimeout: false,
      });
      const inFlight = load.stats();
      await api.kill();
      return `killed with ${inFlight.inFlight} requests in flight (${inFlight.inFlightKeyed} keyed)`;
    },
    holdMs: () => 2_000,
    clear: ({ api }) => api.start(),
  },
];
