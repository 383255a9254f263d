import { spawnSync } from "node:child_process";
import { repoRoot } from "@crm/config";

function npm(args: string[]): number {
  return (
    spawnSync("npm", ["run", "--silent", ...args], {
      cwd: repoRoot(),
      stdio: ["ignore", "inherit", "inherit"],
    }).status ?? 1
  );
}

/** The shared stack up (started if needed), migrated, the connector and the schemas registered. */
export function prepareStack(): void {
  if (npm(["stack", "--", "status"]) !== 0 && npm(["stack", "--", "up"]) !== 0)
    throw new Error("stack did not come up");
  if (npm(["migrate"]) !== 0) throw new Error("migrations failed");
  if (npm(["connector", "--", "register"]) !== 0) throw new Error("connector registration failed");
  if (npm(["schemas", "--", "register"]) !== 0) throw new Error("schema registration failed");
}
