/**
 * The Payment service's own settings (the kit's config covers ports,
 * database, NATS and limits). Checked at start, all problems reported at once.
 *
 * - PAYMENT_PROVIDER: the provider new payments go through; default "sandbox"
 *   (the only built-in one; providers.ts lists them).
 * - PAYMENT_SANDBOX_WEBHOOK_SECRET: the sandbox's webhook signing secret (at
 *   least 32 characters; a development value is used outside production).
 * - PAYMENT_SANDBOX_WEBHOOK_PREVIOUS_SECRETS: comma-separated secrets still
 *   accepted during a rotation; default none.
 * - PAYMENT_WEBHOOK_TOLERANCE_S: how far a webhook's signed timestamp may be
 *   from now, in seconds; default 300 (Stripe's).
 * - PAYMENT_SANDBOX_WEBHOOK_URL: where the sandbox POSTs its signed webhooks;
 *   default this service's own route (PAYMENT_SERVICE_URL, else
 *   http://127.0.0.1:$PORT, + /webhooks/payments/sandbox); behind the edge, set
 *   it to the edge's /webhooks/payments/sandbox. "off" sends none.
 * - PAYMENT_SANDBOX_SLOW_MS / PAYMENT_SANDBOX_ASYNC_MS: when tok_sandbox_slow
 *   answers (default 10000) and tok_sandbox_async settles (default 2000).
 * - PAYMENT_AUTHORIZATION_TTL_HOURS: how long an authorization holds before it
 *   must be captured; default 168 (Stripe's 7 days for cards).
 * - PAYMENT_RECONCILE_EVERY_MS: how often the reconciliation job asks the
 *   provider about payments left PENDING or PROCESSING; default 60000.
 * - PAYMENT_RECONCILE_AFTER_MS: how old such a payment must be before it is
 *   asked about (a call in flight is left alone); default 60000.
 */
import { type Env, EnvReader } from "../../kit/env.ts";

export interface PaymentConfig {
  provider: string;
  sandbox: { webhookSecrets: string[]; toleranceS: number; slowMs: number; asyncMs: number; webhookUrl: string | undefined };
  authorizationTtlMs: number;
  reconcileEveryMs: number;
  reconcileAfterMs: number;
}

export const providerNames = ["sandbox"] as const;

export function loadPaymentConfig(env: Env = process.env): PaymentConfig {
  const r = new EnvReader(env);
  const provider = r.oneOf("PAYMENT_PROVIDER", "sandbox", providerNames);
  const secret = r.secret("PAYMENT_SANDBOX_WEBHOOK_SECRET", "whsec_dev_only_sandbox_webhook_secret_do_not_use");
  const previous = r.list("PAYMENT_SANDBOX_WEBHOOK_PREVIOUS_SECRETS", []);
  const toleranceS = r.int("PAYMENT_WEBHOOK_TOLERANCE_S", 300, 1, 3600);
  const own = env.PAYMENT_SERVICE_URL ?? `http://127.0.0.1:${env.PORT ?? "50055"}`;
  const webhookUrl = r.string("PAYMENT_SANDBOX_WEBHOOK_URL", `${own}/webhooks/payments/sandbox`);
  if (webhookUrl !== "off") r.url("PAYMENT_SANDBOX_WEBHOOK_URL", webhookUrl, ["http:", "https:"]);
  const slowMs = r.int("PAYMENT_SANDBOX_SLOW_MS", 10_000, 1, 600_000);
  const asyncMs = r.int("PAYMENT_SANDBOX_ASYNC_MS", 2_000, 0, 600_000);
  const ttlHours = r.int("PAYMENT_AUTHORIZATION_TTL_HOURS", 168, 1, 30 * 24);
  const reconcileEveryMs = r.int("PAYMENT_RECONCILE_EVERY_MS", 60_000, 100, 24 * 3_600_000);
  const reconcileAfterMs = r.int("PAYMENT_RECONCILE_AFTER_MS", 60_000, 0, 24 * 3_600_000);
  return r.done(
    {
      provider,
      sandbox: { webhookSecrets: [secret, ...previous], toleranceS, slowMs, asyncMs, webhookUrl: webhookUrl === "off" ? undefined : webhookUrl },
      authorizationTtlMs: ttlHours * 3_600_000,
      reconcileEveryMs,
      reconcileAfterMs,
    },
    "payment service configuration",
  );
}
