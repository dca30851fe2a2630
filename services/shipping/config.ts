/**
 * The Shipping service's own settings (the kit's config covers ports,
 * database, NATS and limits). Checked at start, all problems reported at once.
 *
 * - SHIPPING_WEBHOOK_SECRETS: comma-separated `<carrier code>:<secret>`
 *   entries, the shared keys carrier webhooks are signed with; a code may
 *   appear several times while a key is rotated (any one verifies). Secrets
 *   are at least 24 characters. Default: a development key for `sandbox`
 *   (refused in production).
 * - SHIPPING_WEBHOOK_TOLERANCE_SECONDS: how far a webhook's `t=` may be from
 *   our clock, 30 to 3600. Default 300 (Stripe's).
 * - SHIPPING_QUOTE_TTL_SECONDS: how long a QuoteShippingRate quote binds,
 *   1 to 86400. Default 1800 (30 minutes).
 * - SHIPPING_LABEL_CURRENCY: currency of the sandbox carrier's label costs.
 *   Default EUR.
 * - SHIPPING_RATE_LIMIT_TRACKING / SHIPPING_RATE_LIMIT_WINDOW_MS: TrackShipment
 *   calls per client address and window (stops guessing tracking numbers).
 *   Default 60 per 60000 ms.
 * - SHIPPING_CATALOG_TIMEOUT_MS: deadline of the BatchGetProducts call that
 *   weighs a rate quote's items (within what is left of the inbound call),
 *   100 to 30000. Default 2000.
 */
import { type Env, EnvReader } from "../../kit/env.ts";

export const developmentSandboxWebhookSecret = "dev-only-sandbox-carrier-webhook-secret";

export interface ShippingConfig {
  /** Carrier code -> the secrets its webhooks may be signed with. */
  webhookSecrets: ReadonlyMap<string, string[]>;
  webhookToleranceSeconds: number;
  labelCurrency: string;
  quoteTtlSeconds: number;
  trackingChecksPerWindow: number;
  rateLimitWindowMs: number;
  catalogTimeoutMs: number;
}

export function loadShippingConfig(env: Env = process.env): ShippingConfig {
  const r = new EnvReader(env);
  const entries = r.list("SHIPPING_WEBHOOK_SECRETS", [`sandbox:${developmentSandboxWebhookSecret}`]);
  const webhookSecrets = new Map<string, string[]>();
  for (const [i, entry] of entries.entries()) {
    const colon = entry.indexOf(":");
    const code = entry.slice(0, colon).trim();
    const secret = entry.slice(colon + 1).trim();
    if (colon < 1 || !/^[a-z0-9][a-z0-9_-]{1,31}$/.test(code)) r.problem(`SHIPPING_WEBHOOK_SECRETS[${i}] must be <carrier code>:<secret>`);
    else if (secret.length < 24) r.problem(`SHIPPING_WEBHOOK_SECRETS[${i}] (${code}): the secret must be at least 24 characters`);
    else if (r.production && secret === developmentSandboxWebhookSecret) r.problem("SHIPPING_WEBHOOK_SECRETS must be set in production (it is the development default)");
    else webhookSecrets.set(code, [...(webhookSecrets.get(code) ?? []), secret]);
  }
  const webhookToleranceSeconds = r.int("SHIPPING_WEBHOOK_TOLERANCE_SECONDS", 300, 30, 3600);
  const labelCurrency = r.currency("SHIPPING_LABEL_CURRENCY", "EUR");
  const quoteTtlSeconds = r.int("SHIPPING_QUOTE_TTL_SECONDS", 1800, 1, 86_400);
  const trackingChecksPerWindow = r.int("SHIPPING_RATE_LIMIT_TRACKING", 60, 1, 1_000_000);
  const rateLimitWindowMs = r.int("SHIPPING_RATE_LIMIT_WINDOW_MS", 60_000, 1_000, 24 * 3_600_000);
  const catalogTimeoutMs = r.int("SHIPPING_CATALOG_TIMEOUT_MS", 2000, 100, 30_000);
  return r.done({ webhookSecrets, webhookToleranceSeconds, labelCurrency, quoteTtlSeconds, trackingChecksPerWindow, rateLimitWindowMs, catalogTimeoutMs }, "shipping service configuration");
}
