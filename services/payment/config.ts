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
 * - PAYMENT_SANDBOX_WEBHOOK_URL: where the sandbox POSTs its signed webhooks as
 *   plain HTTP, as a provider does: the edge's /webhooks/payments/sandbox
 *   (which turns them into HandleProviderWebhook). Unset (no edge), the
 *   sandbox calls this service's HandleProviderWebhook RPC itself, at
 *   PAYMENT_SERVICE_URL, else http://127.0.0.1:$PORT. "off" sends none.
 * - PAYMENT_SANDBOX_SLOW_MS / PAYMENT_SANDBOX_ASYNC_MS: when tok_sandbox_slow
 *   answers (default 10000) and tok_sandbox_async settles (default 2000).
 * - PAYMENT_AUTHORIZATION_TTL_HOURS: how long an authorization holds before it
 *   must be captured; default 168 (Stripe's 7 days for cards).
 * - PAYMENT_RECONCILE_EVERY_MS: how often the reconciliation job asks the
 *   provider about payments left PENDING or PROCESSING; default 60000.
 * - PAYMENT_RECONCILE_AFTER_MS: how old such a payment must be before it is
 *   asked about (a call in flight is left alone); default 60000.
 * - PAYMENT_TEST_HALT_AFTER_PROVIDER: test only (refused with NODE_ENV=production):
 *   "before_record" makes AuthorizePayment stop answering once the provider has
 *   answered, before the answer is recorded; "after_record" once it is recorded,
 *   before the caller is answered. The call then hangs (it prints one line on
 *   stderr) until the process is killed: a deterministic "crash" for
 *   services/order/kill.test.ts.
 */
import { type Env, EnvReader } from "../../kit/env.ts";

export interface PaymentConfig {
  provider: string;
  sandbox: SandboxSettings;
  authorizationTtlMs: number;
  reconcileEveryMs: number;
  reconcileAfterMs: number;
  testHaltAfterProvider: "before_record" | "after_record" | undefined;
}

export interface SandboxSettings {
  webhookSecrets: string[];
  toleranceS: number;
  slowMs: number;
  asyncMs: number;
  /** Where webhooks go: POSTed to an edge's webhook URL, or the HandleProviderWebhook RPC of the Payment service at `baseUrl`; undefined sends none. */
  webhooks: { kind: "http"; url: string } | { kind: "rpc"; baseUrl: string } | undefined;
}

export const providerNames = ["sandbox"] as const;

export function loadPaymentConfig(env: Env = process.env): PaymentConfig {
  const r = new EnvReader(env);
  const provider = r.oneOf("PAYMENT_PROVIDER", "sandbox", providerNames);
  const secret = r.secret("PAYMENT_SANDBOX_WEBHOOK_SECRET", "whsec_dev_only_sandbox_webhook_secret_do_not_use");
  const previous = r.list("PAYMENT_SANDBOX_WEBHOOK_PREVIOUS_SECRETS", []);
  const toleranceS = r.int("PAYMENT_WEBHOOK_TOLERANCE_S", 300, 1, 3600);
  const own = env.PAYMENT_SERVICE_URL ?? `http://127.0.0.1:${env.PORT ?? "50055"}`;
  const webhookUrl = r.string("PAYMENT_SANDBOX_WEBHOOK_URL", "");
  if (webhookUrl !== "" && webhookUrl !== "off") r.url("PAYMENT_SANDBOX_WEBHOOK_URL", webhookUrl, ["http:", "https:"]);
  const webhooks: SandboxSettings["webhooks"] = webhookUrl === "off" ? undefined : webhookUrl ? { kind: "http", url: webhookUrl } : { kind: "rpc", baseUrl: own };
  const slowMs = r.int("PAYMENT_SANDBOX_SLOW_MS", 10_000, 1, 600_000);
  const asyncMs = r.int("PAYMENT_SANDBOX_ASYNC_MS", 2_000, 0, 600_000);
  const ttlHours = r.int("PAYMENT_AUTHORIZATION_TTL_HOURS", 168, 1, 30 * 24);
  const reconcileEveryMs = r.int("PAYMENT_RECONCILE_EVERY_MS", 60_000, 100, 24 * 3_600_000);
  const reconcileAfterMs = r.int("PAYMENT_RECONCILE_AFTER_MS", 60_000, 0, 24 * 3_600_000);
  const halt = r.oneOf("PAYMENT_TEST_HALT_AFTER_PROVIDER", "", ["", "before_record", "after_record"] as const);
  if (halt && r.production) r.problem("PAYMENT_TEST_HALT_AFTER_PROVIDER is a test setting and is refused in production");
  return r.done(
    {
      provider,
      sandbox: { webhookSecrets: [secret, ...previous], toleranceS, slowMs, asyncMs, webhooks },
      authorizationTtlMs: ttlHours * 3_600_000,
      reconcileEveryMs,
      reconcileAfterMs,
      testHaltAfterProvider: halt || undefined,
    },
    "payment service configuration",
  );
}
