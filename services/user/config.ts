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
import { type Env, EnvReader } from "../../kit/env.ts";
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

/** Reads the User service's settings; every problem is reported at once. */
export function loadUserConfig(env: Env = process.env): UserServiceConfig {
  const r = new EnvReader(env);
  const current = r.key("USER_DATA_KEY", developmentUserDataKey);
  const previous = r.keys("USER_DATA_PREVIOUS_KEYS");
  const currencies = r.currencies("SHOP_CURRENCIES", ["EUR", "USD", "GBP"]);
  const dataKey = { id: dataKeyId(current), key: current };
  const decryptionKeys = [dataKey, ...previous.map((key) => ({ id: dataKeyId(key), key }))];
  return r.done({ dataKey, decryptionKeys, shopCurrencies: new Set(currencies) }, "user service configuration");
}
