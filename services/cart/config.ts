/**
 * The Cart service's own settings (the kit's config covers ports, database,
 * NATS and limits). Checked at start, all problems reported at once.
 *
 * - SHOP_CURRENCY: ISO 4217 currency of new carts (default USD, as the catalog's).
 * - CART_MAX_LINE_QUANTITY: units per line, 1 to 99 (default 99, the contract's maximum).
 * - CART_MAX_LINES: lines per cart, 1 to 100 (default 100; one BatchGetProducts prices the cart).
 * - CART_GUEST_TTL_MS / CART_CUSTOMER_TTL_MS: a cart expires this long after its last
 *   change (default 30 days each).
 * - CART_ABANDON_AFTER_MS: a user cart with items unchanged this long becomes ABANDONED
 *   and cart.abandoned is published (default 24 hours).
 * - CART_CATEGORY_CACHE_MS: how long the catalog's category tree (for the ancestor
 *   categories discount rules match) is kept before it is asked again (default 60 s).
 * - CART_SWEEP_INTERVAL_MS: how often the job marks abandoned carts and purges expired
 *   ones (default 5 minutes).
 */
import { type Env, EnvReader } from "../../kit/env.ts";

export interface CartServiceConfig {
  currency: string;
  maxLineQuantity: number;
  maxLines: number;
  guestTtlMs: number;
  customerTtlMs: number;
  abandonAfterMs: number;
  sweepIntervalMs: number;
  categoryCacheMs: number;
  /** Storefront writes per client address and window (RESOURCE_EXHAUSTED beyond), shared by every replica. */
  writesPerWindow: number;
  rateLimitWindowMs: number;
}

const hour = 3_600_000;
const day = 24 * hour;

export function loadCartConfig(env: Env = process.env): CartServiceConfig {
  const r = new EnvReader(env);
  return r.done(
    {
      currency: r.currency("SHOP_CURRENCY", "USD"),
      maxLineQuantity: r.int("CART_MAX_LINE_QUANTITY", 99, 1, 99),
      maxLines: r.int("CART_MAX_LINES", 100, 1, 100),
      guestTtlMs: r.int("CART_GUEST_TTL_MS", 30 * day, 60_000, 365 * day),
      customerTtlMs: r.int("CART_CUSTOMER_TTL_MS", 30 * day, 60_000, 365 * day),
      abandonAfterMs: r.int("CART_ABANDON_AFTER_MS", 24 * hour, 1, 365 * day),
      sweepIntervalMs: r.int("CART_SWEEP_INTERVAL_MS", 5 * 60_000, 100, day),
      categoryCacheMs: r.int("CART_CATEGORY_CACHE_MS", 60_000, 0, day),
      writesPerWindow: r.int("CART_RATE_LIMIT_WRITES", 300, 1, 1_000_000),
      rateLimitWindowMs: r.int("CART_RATE_LIMIT_WINDOW_MS", 60_000, 1_000, day),
    },
    "cart service configuration",
  );
}
