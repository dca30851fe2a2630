/** Entry point of the TypeScript edge: config from the environment, clean stop on SIGINT/SIGTERM. */
import { createLogger } from "../kit/logger.ts";
import { loadEdgeConfig } from "./config.ts";
import { startEdge } from "./edge.ts";

let config;
try {
  config = loadEdgeConfig();
} catch (error) {
  console.error(`edge failed to start: ${(error as Error).message}`);
  process.exit(1);
}
const log = createLogger("edge", config.logLevel);
const edge = await startEdge({ ...config, logger: log }).catch((error: Error) => {
  log.fatal({ err: error }, "edge failed to start");
  process.exit(1);
});

const stop = async (signal: string) => {
  log.info({ signal }, "stop requested");
  await edge.stop();
  process.exit(0);
};
process.once("SIGINT", () => void stop("SIGINT"));
process.once("SIGTERM", () => void stop("SIGTERM"));
