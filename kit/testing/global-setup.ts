/** vitest global setup: clears databases and nats-servers left by earlier runs that crashed. */
import { dropStaleTestDatabases, stopOrphanedTestNats } from "./infra.ts";

export default async function setup(): Promise<void> {
  const dropped = await dropStaleTestDatabases();
  const stopped = stopOrphanedTestNats();
  if (stopped > 0) console.log(`stopped ${stopped} orphaned test nats-server(s)`);
  if (dropped.length > 0) console.log(`dropped ${dropped.length} stale test database(s): ${dropped.join(", ")}`);
}
