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
import { type Env, EnvReader } from "../../kit/env.ts";

export interface ProductServiceConfig {
  shopCurrency: string;
  reservationTtlSeconds: number;
  sweepIntervalMs: number;
  verifiedPurchaseTimeoutMs: number;
}

/** Reads the Product service's settings; every problem is reported at once. */
export function loadProductConfig(env: Env = process.env): ProductServiceConfig {
  const r = new EnvReader(env);
  return r.done(
    {
      shopCurrency: r.currency("SHOP_CURRENCY", "USD"),
      reservationTtlSeconds: r.int("RESERVATION_TTL_SECONDS", 900, 1, 3600),
      sweepIntervalMs: r.int("RESERVATION_SWEEP_INTERVAL_MS", 15_000, 50, 3_600_000),
      verifiedPurchaseTimeoutMs: r.int("VERIFIED_PURCHASE_TIMEOUT_MS", 1_500, 50, 30_000),
    },
    "product service configuration",
  );
}
