/**
 * The payment provider interface: everything the domain asks of a provider.
 * A provider is chosen by PAYMENT_PROVIDER (config.ts); adding one (e.g.
 * Stripe) is a new module implementing `PaymentProvider` plus a line in
 * `providers.ts`, with no change to the domain code (payments.ts, webhooks.ts).
 *
 * Each operation carries an idempotency key the provider dedupes on (our
 * payment, capture, void or refund id), so a retried or resumed call never
 * charges twice. A provider that did not answer throws `ProviderUnavailable`;
 * a refusal is an outcome, not an exception.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

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

/**
 * Stripe's webhook signature scheme, which the sandbox uses too:
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, several v1
 * while a secret is rotated; any v1 matching any of `secrets` passes, and a
 * timestamp more than `toleranceS` away from now is refused (replays).
 */
export function verifyStripeStyleSignature(payload: Buffer, header: string, secrets: readonly string[], toleranceS: number, nowMs: number): void {
  let timestamp: string | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(",")) {
    const [k, v] = part.trim().split("=", 2);
    if (k === "t") timestamp = v;
    else if (k === "v1" && v && /^[0-9a-f]{64}$/.test(v)) signatures.push(Buffer.from(v, "hex"));
  }
  if (!timestamp || !/^\d{1,12}$/.test(timestamp) || signatures.length === 0) throw new WebhookSignatureInvalid("the signature header has no timestamp or no v1 signature");
  if (Math.abs(nowMs / 1000 - Number(timestamp)) > toleranceS) throw new WebhookSignatureInvalid(`the signature's timestamp is more than ${toleranceS} s from now`);
  const signed = Buffer.concat([Buffer.from(`${timestamp}.`), payload]);
  const ok = secrets.some((secret) => {
    const expected = createHmac("sha256", secret).update(signed).digest();
    return signatures.some((s) => timingSafeEqual(s, expected));
  });
  if (!ok) throw new WebhookSignatureInvalid("no signature matches a configured webhook secret");
}

/** Signs a payload in Stripe's format with each secret (the sandbox's sender, and tests). */
export function signStripeStyle(payload: Buffer | string, secrets: readonly string[], nowMs: number): string {
  const t = Math.floor(nowMs / 1000);
  const signed = Buffer.concat([Buffer.from(`${t}.`), Buffer.from(payload)]);
  return [`t=${t}`, ...secrets.map((s) => `v1=${createHmac("sha256", s).update(signed).digest("hex")}`)].join(",");
}
