/**
 * The built-in sandbox provider: behaves like a real one, bad days included,
 * driven by the test tokens the contract lists (OneTimePaymentToken.token;
 * a saved method's provider token works the same way):
 *
 * - tok_sandbox_success: authorized (Visa ending in 4242).
 * - tok_sandbox_decline / tok_sandbox_insufficient_funds / tok_sandbox_expired_card:
 *   declined with card_declined / insufficient_funds / expired_card.
 * - tok_sandbox_retry: the first two attempts of a payment fail transiently, the third succeeds.
 * - tok_sandbox_slow: answers after SANDBOX_SLOW_MS; a caller that gives up first
 *   still gets the authorization made (what reconciliation repairs).
 * - tok_sandbox_slow_operations: authorized at once; its captures, voids and
 *   refunds are made at once but answered after SANDBOX_SLOW_MS, so a caller
 *   that gives up leaves them PENDING (what reconciliation settles).
 * - tok_sandbox_async: PROCESSING; the outcome is authorized PAYMENT_SANDBOX_ASYNC_MS
 *   later and reported by signed webhooks, POSTed to PAYMENT_SANDBOX_WEBHOOK_URL (the
 *   edge's webhook route) or, without one, sent to the service's HandleProviderWebhook
 *   RPC as the edge would (raw body, signature header), delivered the way real providers may: the later event first, the earlier one after it,
 *   and the later one again (a receiver must dedupe and apply in sequence order).
 * - anything else: declined with invalid_token.
 *
 * Its ledger is this process's memory: it stands for the provider's own
 * systems, not for our records (those are in payment_db). Every operation is
 * idempotent by the key the service passes, as Stripe's Idempotency-Key is.
 */
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { PaymentService } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { v7 as uuidv7 } from "uuid";
import type { Logger } from "../../kit/logger.ts";
import type { SandboxSettings } from "./config.ts";
import { signWebhook, verifyWebhook } from "../../kit/webhooks.ts";
import {
  type AuthorizeInput,
  type MethodDisplay,
  type PaymentProvider,
  type ProviderEvent,
  type ProviderOutcome,
  type ProviderPaymentState,
  ProviderUnavailable,
  WebhookSignatureInvalid,
  WebhookPayloadInvalid,
} from "./provider.ts";

export type SandboxOptions = SandboxSettings;

interface SandboxPayment {
  state: ProviderPaymentState;
  capturedMinor: bigint;
  refundedMinor: bigint;
  /** When an async or slow authorization completes. */
  settlesAt?: number;
  /** tok_sandbox_slow_operations: captures, voids and refunds answer after slowMs. */
  slowOperations?: boolean;
}

const card: MethodDisplay = { type: "credit_card", brand: "visa", last4: "4242", expiryMonth: 12, expiryYear: 2034, reference: "card_sandbox_4242" };
const declines: Record<string, [string, string]> = {
  tok_sandbox_decline: ["card_declined", "Your card was declined."],
  tok_sandbox_insufficient_funds: ["insufficient_funds", "Your card has insufficient funds."],
  tok_sandbox_expired_card: ["expired_card", "Your card has expired."],
};

export class SandboxProvider implements PaymentProvider {
  readonly name = "sandbox";
  readonly signatureHeader = "Sandbox-Signature";
  private readonly payments = new Map<string, SandboxPayment>();
  private readonly answers = new Map<string, ProviderOutcome>();
  private readonly transientFailures = new Map<string, number>();

  private readonly options: SandboxOptions;
  private readonly log: Logger;

  constructor(options: SandboxOptions, log: Logger) {
    this.options = options;
    this.log = log;
  }

  async authorize(input: AuthorizeInput, signal: AbortSignal): Promise<ProviderOutcome> {
    const known = this.answers.get(`auth:${input.paymentId}`);
    if (known) return known;
    const token = input.token;
    if (token === "tok_sandbox_retry") {
      const failures = this.transientFailures.get(input.paymentId) ?? 0;
      if (failures < 2) {
        this.transientFailures.set(input.paymentId, failures + 1);
        throw new ProviderUnavailable("sandbox: temporary processing error (503)");
      }
    }
    const providerPaymentId = `pi_sandbox_${uuidv7().replaceAll("-", "")}`;
    const decline = declines[token];
    const known_token = token === "tok_sandbox_success" || token === "tok_sandbox_retry" || token === "tok_sandbox_slow" || token === "tok_sandbox_async" || token === "tok_sandbox_slow_operations";
    let outcome: ProviderOutcome;
    if (decline || !known_token) {
      const [code, message] = decline ?? ["invalid_token", "The payment token is not valid; ask the customer for another payment method."];
      outcome = { status: "failed", providerId: providerPaymentId, failureCode: code, failureMessage: message, raw: { id: providerPaymentId, status: "requires_payment_method", decline_code: code } };
      this.payments.set(input.paymentId, { state: { status: "failed", providerPaymentId, failureCode: code, failureMessage: message, raw: outcome.raw }, capturedMinor: 0n, refundedMinor: 0n });
    } else if (token === "tok_sandbox_async") {
      outcome = { status: "processing", providerId: providerPaymentId, method: card, raw: { id: providerPaymentId, status: "processing" } };
      this.payments.set(input.paymentId, {
        state: { status: "processing", providerPaymentId, method: card, raw: outcome.raw },
        capturedMinor: 0n,
        refundedMinor: 0n,
        settlesAt: Date.now() + this.options.asyncMs,
      });
      setTimeout(() => void this.settle(input.paymentId), this.options.asyncMs).unref();
    } else {
      outcome = { status: "succeeded", providerId: providerPaymentId, method: card, raw: { id: providerPaymentId, status: "requires_capture", amount: input.amountMinor.toString() } };
      if (token === "tok_sandbox_slow") {
        // The authorization is made at the provider whether or not the caller waits for the answer.
        const settlesAt = Date.now() + this.options.slowMs;
        this.payments.set(input.paymentId, { state: { status: "processing", providerPaymentId, method: card, raw: outcome.raw }, capturedMinor: 0n, refundedMinor: 0n, settlesAt });
        this.answers.set(`auth:${input.paymentId}`, outcome);
        await delay(this.options.slowMs, signal);
        return outcome;
      }
      this.payments.set(input.paymentId, {
        state: { status: "authorized", providerPaymentId, method: card, raw: outcome.raw },
        capturedMinor: 0n,
        refundedMinor: 0n,
        slowOperations: token === "tok_sandbox_slow_operations",
      });
    }
    this.answers.set(`auth:${input.paymentId}`, outcome);
    return outcome;
  }

  async capture(providerPaymentId: string, amountMinor: bigint, key: string, signal: AbortSignal): Promise<ProviderOutcome> {
    return this.answer(providerPaymentId, signal, `capture:${key}`, () => {
      const p = this.byProviderId(providerPaymentId);
      if (!p || p.state.status !== "authorized") return this.refused("payment_intent_unexpected_state", "The payment is not authorized.");
      p.state = { ...p.state, status: "succeeded" };
      p.capturedMinor = amountMinor;
      return { status: "succeeded", providerId: `ch_sandbox_${uuidv7().replaceAll("-", "")}`, raw: { id: providerPaymentId, status: "succeeded", amount_received: amountMinor.toString() } };
    });
  }

  async void(providerPaymentId: string, key: string, signal: AbortSignal): Promise<ProviderOutcome> {
    return this.answer(providerPaymentId, signal, `void:${key}`, () => {
      const p = this.byProviderId(providerPaymentId);
      if (p && p.state.status !== "succeeded") p.state = { ...p.state, status: "cancelled" };
      return { status: "succeeded", providerId: providerPaymentId, raw: { id: providerPaymentId, status: "canceled" } };
    });
  }

  async refund(providerPaymentId: string, amountMinor: bigint, key: string, signal: AbortSignal): Promise<ProviderOutcome> {
    return this.answer(providerPaymentId, signal, `refund:${key}`, () => {
      const p = this.byProviderId(providerPaymentId);
      if (!p || p.refundedMinor + amountMinor > p.capturedMinor) return this.refused("amount_too_large", "The refund exceeds the captured amount.");
      p.refundedMinor += amountMinor;
      const id = `re_sandbox_${uuidv7().replaceAll("-", "")}`;
      return { status: "succeeded", providerId: id, raw: { id, status: "succeeded", amount: amountMinor.toString() } };
    });
  }

  async retrieve(paymentId: string): Promise<ProviderPaymentState | undefined> {
    const p = this.payments.get(paymentId);
    if (!p) return undefined;
    if (p.settlesAt !== undefined && Date.now() >= p.settlesAt && p.state.status === "processing") {
      p.state = { ...p.state, status: "authorized", raw: { ...p.state.raw, status: "requires_capture" } };
    }
    return p.state;
  }

  /**
   * The sandbox's event body, Stripe-like: {"id", "type", "sequence",
   * "data": {"payment_id", "amount_minor", "failure_code", "failure_message"}}.
   */
  verifyWebhook(payload: Buffer, signature: string, nowMs: number): void {
    try {
      verifyWebhook(signature, payload, this.options.webhookSecrets, { toleranceSeconds: this.options.toleranceS, nowSeconds: Math.floor(nowMs / 1000) });
    } catch (error) {
      throw error instanceof ConnectError ? new WebhookSignatureInvalid(error.rawMessage) : error;
    }
  }

  parseEvent(payload: Buffer): ProviderEvent {
    let body: { id?: unknown; type?: unknown; sequence?: unknown; data?: Record<string, unknown> };
    try {
      body = JSON.parse(payload.toString("utf8"));
    } catch {
      throw new WebhookPayloadInvalid("the webhook body is not JSON");
    }
    if (typeof body.id !== "string" || !body.id || typeof body.type !== "string" || !Number.isSafeInteger(body.sequence)) {
      throw new WebhookPayloadInvalid("the webhook body needs a string id and type and an integer sequence");
    }
    const data = body.data ?? {};
    const str = (v: unknown) => (typeof v === "string" ? v : undefined);
    const amount = str(data.amount_minor);
    return {
      id: body.id,
      type: body.type,
      sequence: body.sequence as number,
      paymentId: str(data.payment_id),
      paymentStatus: eventStatus[body.type],
      amountMinor: amount && /^\d{1,18}$/.test(amount) ? BigInt(amount) : undefined,
      failureCode: str(data.failure_code),
      failureMessage: str(data.failure_message),
    };
  }

  /** Settles an async payment and reports it: later event first, then the earlier one, then the later one again. */
  private async settle(paymentId: string): Promise<void> {
    await this.retrieve(paymentId);
    const target = this.options.webhooks;
    if (!target) return;
    const event = (sequence: number, type: string) => JSON.stringify({ id: `evt_sandbox_${paymentId}_${sequence}`, type, sequence, data: { payment_id: paymentId } });
    const authorized = event(2, "payment_intent.amount_capturable_updated");
    for (const body of [authorized, event(1, "payment_intent.processing"), authorized]) await this.deliver(target, body);
  }

  /** The Payment service's own webhook RPC, for deliveries without an edge (one HTTP/2 session, reused). */
  private webhookRpc?: ReturnType<typeof createClient<typeof PaymentService>>;

  /**
   * Sends one signed event, retried with backoff on a failure or a refusal, as providers do:
   * a plain POST to the edge's webhook URL, or (no edge) the HandleProviderWebhook RPC with
   * what the edge would put in it.
   */
  private async deliver(target: NonNullable<SandboxSettings["webhooks"]>, body: string): Promise<void> {
    for (let attempt = 1; attempt <= 5; attempt++) {
      const signature = signWebhook(body, this.options.webhookSecrets[0]!);
      try {
        if (target.kind === "http") {
          const res = await fetch(target.url, {
            method: "POST",
            headers: { "content-type": "application/json", [this.signatureHeader]: signature },
            body,
            signal: AbortSignal.timeout(10_000),
          });
          await res.body?.cancel();
          if (res.ok) return;
        } else {
          this.webhookRpc ??= createClient(PaymentService, createGrpcTransport({ baseUrl: target.baseUrl }));
          await this.webhookRpc.handleProviderWebhook({ provider: this.name, payload: Buffer.from(body), signature }, { timeoutMs: 10_000 });
          return;
        }
      } catch {
        // Retried below.
      }
      await new Promise((r) => setTimeout(r, 200 * 2 ** attempt).unref());
    }
    this.log.warn({ to: target.kind === "http" ? target.url : `${target.baseUrl} HandleProviderWebhook` }, "sandbox: webhook not delivered after 5 attempts");
  }

  /** An operation done once per key; a slow_operations payment's answer comes after slowMs (the work is done already). */
  private async answer(providerPaymentId: string, signal: AbortSignal, key: string, work: () => ProviderOutcome): Promise<ProviderOutcome> {
    const outcome = this.once(key, work);
    if (this.byProviderId(providerPaymentId)?.slowOperations) await delay(this.options.slowMs, signal);
    return outcome;
  }

  private once(key: string, work: () => ProviderOutcome): ProviderOutcome {
    const known = this.answers.get(key);
    if (known) return known;
    const outcome = work();
    this.answers.set(key, outcome);
    return outcome;
  }

  private refused(code: string, message: string): ProviderOutcome {
    return { status: "failed", providerId: "", failureCode: code, failureMessage: message, raw: { error: { code, message } } };
  }

  private byProviderId(providerPaymentId: string): SandboxPayment | undefined {
    for (const p of this.payments.values()) if (p.state.providerPaymentId === providerPaymentId) return p;
    return undefined;
  }
}

/** Event types the sandbox sends (Stripe's names) and the payment state each reports. */
const eventStatus: Record<string, ProviderPaymentState["status"]> = {
  "payment_intent.processing": "processing",
  "payment_intent.amount_capturable_updated": "authorized",
  "payment_intent.succeeded": "succeeded",
  "payment_intent.payment_failed": "failed",
  "payment_intent.canceled": "cancelled",
};

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new ProviderUnavailable("the provider call was abandoned"));
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), reject(new ProviderUnavailable("the provider did not answer in time"))), { once: true });
  });
}
