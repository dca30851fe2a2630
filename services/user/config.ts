/**
 * The User service's own settings (the kit's config covers ports, database,
 * NATS and limits). Checked at start, all problems reported at once, with
 * defaults that work locally.
 *
 * - USER_DATA_KEY: base64 of 32 random bytes, the AES-256-GCM key that
 *   encrypts saved payment method tokens. Required in production; locally the
 *   development key below is used.
 * - USER_DATA_PREVIOUS_KEYS: comma-separated base64 keys that were current
 *   before a rotation; only used to decrypt tokens written under them.
 * - SHOP_CURRENCIES: comma-separated ISO 4217 codes the shop sells in (a
 *   profile's preferred currency must be one of them). Default EUR,USD,GBP.
 */
import { createHash } from "node:crypto";
import { keyFingerprint } from "../../kit/sealing.ts";

export interface DataKey {
  /** Stored with each ciphertext, so rows written under an older key stay readable after a rotation. */
  id: string;
  key: Buffer;
}

export interface UserServiceConfig {
  /** The key new tokens are encrypted with. */
  dataKey: DataKey;
  /** Every key that can decrypt (the current one first). */
  decryptionKeys: DataKey[];
  shopCurrencies: ReadonlySet<string>;
}

/**
 * Development-only data key: derived from a public string, so anything
 * encrypted with it is as good as plain text. Production must set USER_DATA_KEY.
 */
export const developmentUserDataKey: Buffer = createHash("sha256").update("dev-only-user-data-key-do-not-use-in-production").digest();

/** A key's id: a fingerprint of the key (not reversible), so ids can never disagree with keys. */
export function dataKeyId(key: Buffer): string {
  return `k1-${keyFingerprint(key, "user-data-key-id:")}`;
}

type Env = Record<string, string | undefined>;

function parseKey(name: string, raw: string, problems: string[]): Buffer | undefined {
  const trimmed = raw.trim();
  const key = Buffer.from(trimmed, "base64");
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed) || key.length !== 32) {
    problems.push(`${name} must be base64 of exactly 32 bytes (e.g. \`openssl rand -base64 32\`), got ${key.length} bytes`);
    return undefined;
  }
  return key;
}

export function loadUserConfig(env: Env = process.env): UserServiceConfig {
  const problems: string[] = [];
  const rawKey = env.USER_DATA_KEY ?? "";
  let current = developmentUserDataKey;
  if (rawKey !== "") current = parseKey("USER_DATA_KEY", rawKey, problems) ?? developmentUserDataKey;
  else if (env.NODE_ENV === "production") problems.push("USER_DATA_KEY must be set in production (the development key is public)");

  const previous = (env.USER_DATA_PREVIOUS_KEYS ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s, i) => parseKey(`USER_DATA_PREVIOUS_KEYS[${i}]`, s, problems))
    .filter((k): k is Buffer => k !== undefined);

  const currencies = (env.SHOP_CURRENCIES ?? "EUR,USD,GBP")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const c of currencies) if (!/^[A-Z]{3}$/.test(c)) problems.push(`SHOP_CURRENCIES must list ISO 4217 codes like EUR, got "${c}"`);
  if (currencies.length === 0) problems.push("SHOP_CURRENCIES must name at least one currency");

  if (problems.length > 0) throw new Error(`invalid user service configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  const dataKey = { id: dataKeyId(current), key: current };
  const decryptionKeys = [dataKey, ...previous.map((key) => ({ id: dataKeyId(key), key }))];
  return { dataKey, decryptionKeys, shopCurrencies: new Set(currencies) };
}
