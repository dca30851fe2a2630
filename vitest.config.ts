import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    exclude: ["node_modules/**", ".build/**", "gen/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Suites start real servers on loopback ports; files run one at a time on
    // the 2-core machines CI uses, tests inside a file stay sequential.
    fileParallelism: false,
    reporters: ["default"],
    globalSetup: ["kit/testing/global-setup.ts"],
  },
});
