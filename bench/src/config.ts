/** Settings of one `npm run bench` (README "Benchmarks"), from the environment. */
export interface BenchConfig {
  durationS: number;
  warmupS: number;
  /** BENCH_ONLY: the scenario numbers to run (6 = the limits). */
  only: Set<number>;
  e2eRate: number;
  /** Scenario 4's second latency run (issue 13: p95 < 500 ms at 2,500 events/s too). */
  e2eRateHigh: number;
  offeredRate: number;
  connections: number;
  profile: boolean;
  apiPort: number;
  workerPort: number;
  /** Other tenants in the end-to-end scenarios (the hot tenant of scenario 5 is one more). */
  tenants: number;
}

/** The plan of the bench businesses; the bench's ingest-api gets a limit for it that cannot throttle the load. */
export const BENCH_PLAN = "bench";
export const BENCH_PLAN_LIMIT = 10_000_000;

/**
 * BENCH_DURATION_S (20), BENCH_WARMUP_S (5), BENCH_ONLY (e.g. "1,4"; 6 = limits; 7 = erasure, 8 = segments, only when named; 17 = automations), BENCH_E2E_RATE (1000 events/s),
 * BENCH_E2E_OFFERED (8000 events/s offered to find the applied ceiling), BENCH_CONNECTIONS (64), BENCH_PROFILE
 * (1; 0 = no --cpu-prof), BENCH_API_PORT (18080), BENCH_WORKER_PORT (18091).
 */
export function readBenchConfig(env: NodeJS.ProcessEnv): BenchConfig {
  const int = (name: string, fallback: number) => {
    const value = Number(env[name]);
    return Number.isFinite(value) && env[name] !== "" && env[name] !== undefined ? value : fallback;
  };
  return {
    durationS: int("BENCH_DURATION_S", 20),
    warmupS: int("BENCH_WARMUP_S", 5),
    only: new Set(
      (env.BENCH_ONLY ?? "1,2,3,4,5,6,17")
        .split(",")
        .map((part) => Number(part.trim()))
        .filter(Boolean),
    ),
    e2eRate: int("BENCH_E2E_RATE", 1_000),
    e2eRateHigh: int("BENCH_E2E_RATE_HIGH", 2_500),
    offeredRate: int("BENCH_E2E_OFFERED", 8_000),
    connections: int("BENCH_CONNECTIONS", 64),
    profile: env.BENCH_PROFILE !== "0",
    apiPort: int("BENCH_API_PORT", 18_080),
    workerPort: int("BENCH_WORKER_PORT", 18_091),
    tenants: 10,
  };
}

/** Progress lines go to stderr; stdout carries only the report. */
export const say = (line: string) => process.stderr.write(`[bench] ${line}\n`);
