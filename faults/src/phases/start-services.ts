import { sleep } from "@crm/process";
import { startApplyOrderLog } from "../check.ts";
import { CONFIG, say } from "../config.ts";
import type { Harness } from "../harness.ts";

/** The services up, the commit-order log and the delivery probe recording, then the baseline load. */
export async function startServicesAndLoad(harness: Harness): Promise<void> {
  await Promise.all(harness.services.map((service) => service.start()));
  await startApplyOrderLog(harness.admin);
  await harness.probe.start();
  say(`services up; load ${CONFIG.rate} req/s over ${CONFIG.businesses} businesses (run ${harness.runId})`);
  harness.phase = "baseline";
  harness.load.start();
  await sleep(CONFIG.baselineMs);
}
