import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    environment: "node",
    testTimeout: 90_000,
    hookTimeout: 200_000,
    teardownTimeout: 90_000,
    pool: "forks",
    projects: [
      { extends: true, test: { name: "unit", include: ["test/unit/**/*.test.ts"] } },
      { extends: true, test: { name: "conformance", include: ["test/conformance/**/*.test.ts"], globalSetup: ["test/conformance/globalSetup.ts"], fileParallelism: false } },
    ],
  },
});
