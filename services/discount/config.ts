/**
 * The Discount service's own settings (the kit's config covers ports,
 * database, NATS and limits). Checked at start, all problems reported at once.
 *
 * - SHOP_CURRENCIES: comma-separated ISO 4217 codes the shop sells in (the
 *   same setting as the User service's); a promotion with amounts must be in
 *   one of them. Default EUR,USD,GBP.
 * - DISCOUNT_MAX_AUTOMATIC: the most live automatic promotions one quote
 *   considers (highest priority first), so a forgotten pile of promotions
 *   cannot make every cart slow. Default 200, 1 to 10000.
 */
import { type Env, EnvReader } from "../../kit/env.ts";

export interface DiscountConfig {
  shopCurrencies: ReadonlySet<string>;
  maxAutomatic: number;
  /** ValidateCoupon calls per client address and window: it stops guessing codes (shared by every replica). */
  codeChecksPerWindow: number;
  rateLimitWindowMs: number;
}

export function loadDiscountConfig(env: Env = process.env): DiscountConfig {
  const r = new EnvReader(env);
  const currencies = r.currencies("SHOP_CURRENCIES", ["EUR", "USD", "GBP"]);
  const maxAutomatic = r.int("DISCOUNT_MAX_AUTOMATIC", 200, 1, 10_000);
  const codeChecksPerWindow = r.int("DISCOUNT_RATE_LIMIT_CODE_CHECKS", 30, 1, 1_000_000);
  const rateLimitWindowMs = r.int("DISCOUNT_RATE_LIMIT_WINDOW_MS", 60_000, 1_000, 24 * 3_600_000);
  return r.done({ shopCurrencies: new Set(currencies), maxAutomatic, codeChecksPerWindow, rateLimitWindowMs }, "discount service configuration");
}
