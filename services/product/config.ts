/**
 * The Product service's own settings (the kit's config covers ports, database,
 * NATS and limits). Checked at start, all problems reported at once, with
 * defaults that work locally.
 *
 * - SHOP_CURRENCY: ISO 4217 code of the shop's prices; price filters and price
 *   bands of ListProducts and SearchProducts are in it. Default USD.
 * - RESERVATION_TTL_SECONDS: how long a stock reservation holds when
 *   ReserveStock names no ttl, 1 to 3600. Default 900 (the contract's 15 minutes).
 * - RESERVATION_SWEEP_INTERVAL_MS: how often expired reservations are given
 *   back, 50 to 3600000. Default 15000.
 * - VERIFIED_PURCHASE_TIMEOUT_MS: deadline of the Order service's
 *   CheckVerifiedPurchase during CreateReview, 50 to 30000. Default 1500.
 */

export interface ProductServiceConfig {
  shopCurrency: string;
  reservationTtlSeconds: number;
  sweepIntervalMs: number;
  verifiedPurchaseTimeoutMs: number;
}

type Env = Record<string, string | undefined>;

function intOf(env: Env, name: string, fallback: number, min: number, max: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
    return fallback;
  }
  return n;
}

export function loadProductConfig(env: Env = process.env): ProductServiceConfig {
  const problems: string[] = [];
  const shopCurrency = env.SHOP_CURRENCY || "USD";
  if (!/^[A-Z]{3}$/.test(shopCurrency)) problems.push(`SHOP_CURRENCY must be an ISO 4217 code like USD, got "${shopCurrency}"`);
  const config: ProductServiceConfig = {
    shopCurrency,
    reservationTtlSeconds: intOf(env, "RESERVATION_TTL_SECONDS", 900, 1, 3600, problems),
    sweepIntervalMs: intOf(env, "RESERVATION_SWEEP_INTERVAL_MS", 15_000, 50, 3_600_000, problems),
    verifiedPurchaseTimeoutMs: intOf(env, "VERIFIED_PURCHASE_TIMEOUT_MS", 1_500, 50, 30_000, problems),
  };
  if (problems.length > 0) throw new Error(`invalid product service configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  return config;
}
