/**
 * Reconciliation: a payment left PENDING or PROCESSING longer than
 * PAYMENT_RECONCILE_AFTER_MS (a call that died between the provider's answer
 * and our commit, a timed-out provider, a lost webhook) is looked up at the
 * provider and recorded as the provider has it, the same way its answer would
 * have been (recordAuthorization: forward only, first writer wins). A payment
 * the provider never saw is FAILED (processing_error): nothing was held.
 *
 * A CAPTURE, VOID or REFUND left PENDING as long (its call timed out, or the
 * process died after recording the intent, before or after the provider
 * answered) is asked again at the provider with the same idempotency key (our
 * transaction or refund id): the provider answers what it did with that key
 * (Stripe's idempotent replay) or, if it never saw it, does now what the
 * caller asked for. The answer is recorded as the call would have recorded it
 * (recordCapture / recordVoid / recordRefund: from PENDING only, the event in
 * the same transaction through the outbox), so a late caller, a second job
 * run or a replica racing it changes nothing and the event goes out once.
 * A provider that does not answer leaves the row PENDING for the next run.
 *
 * The same job processes again the webhooks whose processing failed.
 */
import type { EntityManager } from "../../kit/db.ts";
import type { Logger } from "../../kit/logger.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { PaymentConfig } from "./config.ts";
import { recordAuthorization, recordCapture, recordRefund, recordVoid } from "./payments.ts";
import { type ProviderOutcome, ProviderUnavailable } from "./provider.ts";
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

/** CAPTUREs, VOIDs and REFUNDs left PENDING past PAYMENT_RECONCILE_AFTER_MS, settled from the provider's answer; how many were recorded. */
export async function reconcileOperations(em: EntityManager, config: PaymentConfig, providers: Providers, log: Logger, signal: AbortSignal): Promise<number> {
  const stale = await sqlOf(em).all<{ id: string; type: "capture" | "void" | "refund"; payment_id: string; refund_id: string | null; amount_minor: string; provider: string; provider_payment_id: string | null }>(
    `select t.id, t.type, t.payment_id, t.refund_id, t.amount_minor, p.provider, p.provider_payment_id
       from payment_transactions t join payments p on p.id = t.payment_id
      where t.type <> 'authorize' and t.status = 'pending' and t.created_at < now() - ($1 * interval '1 millisecond')
      order by t.created_at limit 100`,
    [config.reconcileAfterMs],
  );
  let repaired = 0;
  for (const t of stale) {
    if (signal.aborted) break;
    const provider = providers.get(t.provider);
    const amount = BigInt(t.amount_minor);
    let outcome: ProviderOutcome;
    try {
      if (t.type === "capture") outcome = await provider.capture(t.provider_payment_id ?? "", amount, t.id, signal);
      else if (t.type === "refund") outcome = await provider.refund(t.provider_payment_id ?? "", amount, t.refund_id!, signal);
      // A void of a payment the provider never accepted has nothing to release (as voidPayment does).
      else outcome = t.provider_payment_id ? await provider.void(t.provider_payment_id, t.id, signal) : { status: "succeeded", providerId: "", raw: {} };
      const recorded = await em.fork().transactional(async (tx) => {
        if (t.type === "capture") return recordCapture(tx, t.payment_id, t.id, outcome);
        if (t.type === "void") return recordVoid(tx, t.payment_id, t.id, outcome);
        return recordRefund(tx, t.refund_id!, t.id, outcome);
      });
      if (recorded) {
        repaired++;
        log.info({ payment_id: t.payment_id, transaction_id: t.id, type: t.type, status: outcome.status }, "reconciled an operation left pending");
      }
    } catch (error) {
      // One row's trouble does not hold up the others; it stays PENDING for the next run.
      const unanswered = error instanceof ProviderUnavailable;
      log[unanswered ? "warn" : "error"](
        { err: unanswered ? undefined : error, payment_id: t.payment_id, transaction_id: t.id, type: t.type },
        unanswered ? "the provider did not answer; the operation stays pending for the next run" : "reconciling an operation failed; it stays pending for the next run",
      );
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
