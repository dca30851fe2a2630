/**
 * The services allowed to obtain service tokens, with the argon2id hashes of
 * their secrets. SERVICE_CREDENTIALS is `name:hash,name:hash,...` (a PHC hash
 * contains commas itself, so an entry starts at each `name:$argon2`); a name
 * may appear twice while its secret is rotated. Unset, every service of the
 * catalog is accepted with its development secret.
 */
import { type Algorithm, hash, parseOptions, verify } from "@node-rs/argon2";
import { serviceNames } from "../../kit/catalog.ts";
import { ConfigError, developmentServiceSecret } from "../../kit/config.ts";

const argon2id = 2 as Algorithm;
const entryStart = /^\s*([a-z][a-z0-9-]{1,49}):(\$argon2.*)$/s;

/** Parses SERVICE_CREDENTIALS; a ConfigError names every bad entry. */
export function parseServiceCredentials(raw: string): Map<string, string[]> {
  const entries: [string, string][] = [];
  const problems: string[] = [];
  for (const piece of raw.split(",")) {
    const m = entryStart.exec(piece);
    if (m) entries.push([m[1]!, m[2]!.trim()]);
    else if (entries.length > 0) entries[entries.length - 1]![1] += `,${piece.trim()}`;
    else if (piece.trim()) problems.push(`SERVICE_CREDENTIALS: "${piece.trim().slice(0, 20)}..." is not "name:argon2id-hash"`);
  }
  const byName = new Map<string, string[]>();
  for (const [name, phc] of entries) {
    try {
      if (parseOptions(phc).algorithm !== argon2id) throw new Error("not argon2id");
    } catch {
      problems.push(`SERVICE_CREDENTIALS: the hash of "${name}" is not an argon2id PHC string`);
      continue;
    }
    byName.set(name, [...(byName.get(name) ?? []), phc]);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return byName;
}

export class ServiceCredentialStore {
  private readonly hashes: Promise<Map<string, string[]>>;
  private dummy: Promise<string> | undefined;

  constructor(raw: string) {
    // Parse now so a bad value stops the service at start; dev hashes are made once, in the background.
    this.hashes = raw ? Promise.resolve(parseServiceCredentials(raw)) : developmentCredentials();
    this.hashes.catch(() => undefined);
  }

  /** Whether `secret` is a current secret of `service`; as slow for unknown names as for known ones. */
  async check(service: string, secret: string): Promise<boolean> {
    const hashes = (await this.hashes).get(service);
    if (!hashes) {
      this.dummy ??= hash("no service has this secret", { algorithm: argon2id });
      await verify(await this.dummy, secret).catch(() => false);
      return false;
    }
    let ok = false;
    for (const phc of hashes) if (await verify(phc, secret).catch(() => false)) ok = true;
    return ok;
  }
}

async function developmentCredentials(): Promise<Map<string, string[]>> {
  // Cheap parameters: these secrets are public development values anyway.
  const entries = await Promise.all(
    serviceNames.map(async (name): Promise<[string, string[]]> => [
      name,
      [await hash(developmentServiceSecret(name), { algorithm: argon2id, memoryCost: 4096, timeCost: 1 })],
    ]),
  );
  return new Map(entries);
}

/** `name:hash` for SERVICE_CREDENTIALS, from a service's secret (see hash-service-secret.ts). */
export async function serviceCredentialEntry(name: string, secret: string): Promise<string> {
  return `${name}:${await hash(secret, { algorithm: argon2id })}`;
}
