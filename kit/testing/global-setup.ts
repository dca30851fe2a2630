/** vitest global setup: clears databases left by earlier runs that crashed. */
import { dropStaleTestDatabases } from "./infra.ts";

export default async function setup(): Promise<void> {
  const dropped = await dropStaleTestDatabases();
  if (dropped.length > 0) console.log(`dropped ${dropped.length} stale test database(s): ${dropped.join(", ")}`);
}
