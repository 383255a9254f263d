import { defineConfig } from "vitest/config";

// Two projects: fast unit tests, and integration tests against the real stack. The stack is chosen and started
// in one place, packages/pipeline/src/test-setup.ts.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          sequence: { groupOrder: 0 },
          include: ["**/src/**/*.test.ts", "infra/**/*.test.ts"],
          exclude: ["**/node_modules/**", "**/*.integration.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          // after the unit tests, with its own worker limit
          sequence: { groupOrder: 1 },
          include: ["**/*.integration.test.ts"],
          exclude: ["**/node_modules/**"],
          globalSetup: ["packages/pipeline/src/test-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 240_000,
          // Files share one stack; a few at a time keeps a 2-core machine responsive.
          maxWorkers: 2,
        },
      },
    ],
  },
});
