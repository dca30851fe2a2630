/**
 * `npm run migrate [-- service ...]`: applies the committed migrations of every
 * implemented service (or the named ones) to its database, creating the database
 * when missing, then exits. Services also migrate at start; this is for deploys
 * that migrate before rolling out.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { serviceNames, type ServiceName } from "../kit/catalog.ts";
import { loadConfig } from "../kit/config.ts";
import { createLogger } from "../kit/logger.ts";
import { openServiceDatabase, type AnyServiceDefinition } from "../kit/server.ts";

const root = join(import.meta.dirname, "..");
const requested = process.argv.slice(2) as ServiceName[];
const unknown = requested.filter((n) => !serviceNames.includes(n));
if (unknown.length) {
  console.error(`unknown service(s): ${unknown.join(", ")}; known: ${serviceNames.join(", ")}`);
  process.exit(2);
}
const targets = (requested.length ? requested : serviceNames).filter((n) => existsSync(join(root, "services", n, "service.ts")));

for (const name of targets) {
  const mod = (await import(pathToFileURL(join(root, "services", name, "service.ts")).href)) as Record<string, unknown>;
  const def = Object.values(mod).find((v): v is AnyServiceDefinition => !!v && typeof v === "object" && (v as AnyServiceDefinition).name === name);
  if (!def) throw new Error(`services/${name}/service.ts exports no service definition named "${name}"`);
  const config = loadConfig(name);
  const log = createLogger(`migrate:${name}`, "info");
  const orm = await openServiceDatabase(def, config.databaseUrl, log);
  await orm.close();
  console.log(`${name}: database ${new URL(config.databaseUrl).pathname.slice(1)} is up to date`);
}
if (targets.length === 0) console.log("no implemented service to migrate");
