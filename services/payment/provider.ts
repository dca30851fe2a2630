/**
 * The payment provider interface: everything the domain asks of a provider.
 * A provider is chosen by PAYMENT_PROVIDER (config.ts); adding one (e.g.
 * Stripe) is a new module implementing `PaymentProvider` plus a line in
 * `providers.ts`, with no change to the domain code (payments.ts, webhooks.ts).
 *
 * Each operation carries an idempotency key the provider dedupes on (our
 * payment, capture, void or refund id), so a retried or resumed call never
 * charges twice. A provider that did not answer throws `ProviderUnavailable`;
 * a refusal is an outcome, not an exception. Webhook signatures use the
 * kit's one scheme (kit/webhooks.ts, Stripe's) unless a provider has its own.
 */
export interface MethodDisplay {
  type: "credit_card" | "debit_card" | "paypal";
  brand?: string;
  last4?: string;
  expiryMonth?: number;
  expiryYear?: number;
  /** The provider's reference to the instrument (never a token). */
  reference?: string;
}

export interface ProviderOutcome {
  status: "succeeded" | "failed" | "processing";
  /** The provider's id of the payment (authorize) or of the operation. */
  providerId: string;
  failureCode?: string;
  failureMessage?: string;
  method?: MethodDisplay;
  /** The provider's answer, secrets removed, for the admin view. */
  raw: Record<string, unknown>;
}

/** What the provider knows about a payment (reconciliation). */
export interface ProviderPaymentState {
  status: "processing" | "authorized" | "succeeded" | "failed" | "cancelled";
  providerPaymentId: string;
  failureCode?: string;
  failureMessage?: string;
  method?: MethodDisplay;
  raw: Record<string, unknown>;
}

/** A verified provider event. */
export interface ProviderEvent {
  id: string;
  type: string;
  /** Per-payment order of the provider's events (an older one is ignored). */
  sequence: number;
  /** Our payment id, as the provider echoes it back. */
  paymentId?: string;
  /** What the event says about the payment; undefined for a type we do not handle. */
  paymentStatus?: ProviderPaymentState["status"];
  amountMinor?: bigint;
  failureCode?: string;
  failureMessage?: string;
}

export interface AuthorizeInput {
  /** Our payment id: the provider's idempotency key and metadata. */
  paymentId: string;
  amountMinor: bigint;
  currency: string;
  token: string;
  description: string;
}

export interface PaymentProvider {
  readonly name: string;
  /** The HTTP header its webhooks are signed in. */
  readonly signatureHeader: string;
  authorize(input: AuthorizeInput, signal: AbortSignal): Promise<ProviderOutcome>;
  capture(providerPaymentId: string, amountMinor: bigint, key: string, signal: AbortSignal): Promise<ProviderOutcome>;
  void(providerPaymentId: string, key: string, signal: AbortSignal): Promise<ProviderOutcome>;
  refund(providerPaymentId: string, amountMinor: bigint, key: string, signal: AbortSignal): Promise<ProviderOutcome>;
  /** The provider's state of one of our payments, by our payment id; undefined if it never saw it. */
  retrieve(paymentId: string, signal: AbortSignal): Promise<ProviderPaymentState | undefined>;
  /** Checks a webhook's signature header; throws WebhookSignatureInvalid. */
  verifyWebhook(payload: Buffer, signature: string, nowMs: number): void;
  /** Parses a verified (or stored) webhook body; throws WebhookPayloadInvalid. */
  parseEvent(payload: Buffer): ProviderEvent;
}

/** The provider did not answer (network, 5xx, timeout): retry with the same key. */
export class ProviderUnavailable extends Error {}
export class WebhookSignatureInvalid extends Error {}
export class WebhookPayloadInvalid extends Error {}
