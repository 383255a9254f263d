import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@crm/config";
import { describe, expect, it } from "vitest";

// The project brings its own Node (the machines ship Node 20, past its end of life): `npm ci` installs the
// platform's node binary package, and every npm script finds it first on PATH (node_modules/.bin).
describe("runtime", () => {
  const manifest = JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as {
    engines: { node: string };
    optionalDependencies: Record<string, string>;
  };

  const pinned = manifest.optionalDependencies[`node-${process.platform}-${process.arch}`];

  it.runIf(pinned !== undefined)("runs the tests on the Node the project pins, not the machine's", () => {
    expect(pinned).toMatch(/^24\./);
    expect(process.versions.node).toBe(pinned);
  });

  it("pins the same version for every platform it brings a binary for", () => {
    expect(new Set(Object.values(manifest.optionalDependencies)).size).toBe(1);
    expect(manifest.engines.node).toBe(">=24");
  });
});
