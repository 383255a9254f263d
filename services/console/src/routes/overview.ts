import { Hono } from "hono";
import { maySee } from "../access.ts";
import type { ConsoleContext, ConsoleDeps, ConsoleEnvBindings } from "../app.ts";
import {
  type ConnectorState,
  connectorState,
  consumerLag,
  type GroupLag,
  type ServiceHealth,
  type SlotState,
  serviceHealth,
  slotStates,
} from "../pipeline-state.ts";
import type { RatePoint } from "../rates.ts";
import { overviewLive, overviewPage } from "../views/overview.ts";

export interface OverviewData {
  /** the operator sees the pipeline; a business user only their dead letters (rates and lag span every tenant) */
  scope: "pipeline" | "business";
  rates: RatePoint[];
  latest: RatePoint | undefined;
  lag: GroupLag[];
  connector: ConnectorState | undefined;
  slots: SlotState[];
  services: ServiceHealth[];
  deadLetters: number;
  dlqTopic: string;
}

/** The overview (issue 19.2): rates per stage, lag, connector, slot, DLQ size, health; polled every few seconds. */
export function overviewRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnvBindings>();
  // The pipeline's state is the same for every operator: read at most every 3 s, however many tabs poll.
  let cached:
    | {
        at: number;
        value: Promise<Omit<OverviewData, "rates" | "latest" | "deadLetters" | "scope" | "dlqTopic">>;
      }
    | undefined;

  const pipelineState = () => {
    if (!cached || Date.now() - cached.at > 3_000) {
      const value = (async () => {
        const [lag, connector, slots, services] = await Promise.all([
          consumerLag(deps.kafka, deps.lagGroups).catch(() => []),
          connectorState({ connectUrl: deps.connect.url, ...deps.connect }),
          slotStates(deps.db).catch(() => []),
          serviceHealth(deps.services),
        ]);
        return { lag, connector, slots, services };
      })();
      cached = { at: Date.now(), value };
      value.catch(() => {
        cached = undefined;
      });
    }
    return cached.value;
  };

  async function data(c: ConsoleContext): Promise<OverviewData> {
    const viewer = c.get("viewer");
    const deadLetters = deps.deadLetters.list().filter((e) => maySee(viewer, e.businessId)).length;
    if (viewer.businesses !== null) {
      return {
        dlqTopic: deps.dlqTopic,
        scope: "business",
        rates: [],
        latest: undefined,
        lag: [],
        connector: undefined,
        slots: [],
        services: [],
        deadLetters,
      };
    }
    const points = deps.rates.points;
    return {
      dlqTopic: deps.dlqTopic,
      scope: "pipeline",
      rates: points,
      latest: points.at(-1),
      ...(await pipelineState()),
      deadLetters,
    };
  }

  app.get("/", async (c) =>
    c.html(overviewPage({ viewer: c.get("viewer"), csrf: c.get("csrf"), data: await data(c) })),
  );
  app.get("/overview/live", async (c) => c.html(overviewLive(await data(c))));
  app.get("/api/overview", async (c) => c.json({ ok: true, ...(await data(c)) }));

  return app;
}
