/**
 * Demo data for a service: its database is migrated as the service would at start,
 * then `load` runs in one transaction on a plain connection, so a seed is all or
 * nothing and a second run (written idempotently with `on conflict do nothing`) adds nothing.
 */
import pg from "pg";
import { createLogger } from "./logger.ts";
import { type AnyServiceDefinition, openServiceDatabase } from "./server.ts";

export async function seedService<T>(def: AnyServiceDefinition, url: string, load: (client: pg.Client) => Promise<T>): Promise<T> {
  const orm = await openServiceDatabase(def, url, createLogger(`seed:${def.name}`, "warn"));
  await orm.close();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("begin");
    const result = await load(client);
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    await client.end();
  }
}
