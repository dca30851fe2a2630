/**
 * Reconciliation: a payment left PENDING or PROCESSING longer than
 * PAYMENT_RECONCILE_AFTER_MS (a call that died between the provider's answer
 * and our commit, a timed-out provider, a lost webhook) is looked up at the
 * provider and recorded as the provider has it, the same way its answer would
 * have been (recordAuthorization: forward only, first writer wins). A payment
 * the provider never saw is FAILED (processing_error): nothing was held.
 * The same job processes again the webhooks whose processing failed.
 */
import type { EntityManager } from "../../kit/db.ts";
import type { Logger } from "../../kit/logger.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { PaymentConfig } from "./config.ts";
import { recordAuthorization } from "./payments.ts";
import { processWebhook, type WebhookDeps } from "./webhooks.ts";
import type { Providers } from "./providers.ts";

export async function reconcilePayments(em: EntityManager, config: PaymentConfig, providers: Providers, log: Logger, signal: AbortSignal): Promise<number> {
  const stale = await sqlOf(em).all<{ id: string; provider: string; status: string }>(
    `select id, provider, status from payments where status in ('pending', 'processing') and updated_at < now() - ($1 * interval '1 millisecond')
      order by updated_at limit 100`,
    [config.reconcileAfterMs],
  );
  let repaired = 0;
  for (const p of stale) {
    if (signal.aborted) break;
    const state = await providers.get(p.provider).retrieve(p.id, signal);
    const outcome = state
      ? { providerId: state.providerPaymentId, failureCode: state.failureCode, failureMessage: state.failureMessage, method: state.method, raw: state.raw }
      : { providerId: "", failureCode: "processing_error", failureMessage: "The payment could not be processed; try again.", raw: {} };
    const status = !state ? "failed" : state.status === "authorized" || state.status === "succeeded" ? "authorized" : state.status === "processing" ? "processing" : "failed";
    if (status === "processing" && p.status === "processing") continue;
    if (await em.fork().transactional((tx) => recordAuthorization(tx, config, p.id, status, outcome))) {
      repaired++;
      log.info({ payment_id: p.id, status }, "reconciled a payment left unsettled");
    }
  }
  return repaired;
}

/** Webhooks whose processing failed (or was cut off after they were stored) are processed again, at most 20 attempts each. */
export async function retryWebhooks(em: EntityManager, deps: WebhookDeps, signal: AbortSignal): Promise<void> {
  const due = await sqlOf(em).all<{ id: string }>(
    `select id from payment_webhooks where status in ('failed', 'pending') and attempts < 20 and coalesce(processed_at, created_at) < now() - interval '30 seconds'
      order by created_at limit 100`,
  );
  for (const w of due) {
    if (signal.aborted) break;
    await processWebhook(em.fork(), deps, w.id);
  }
}
