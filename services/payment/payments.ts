/**
 * AuthorizePayment, CapturePayment, VoidPayment and RefundPayment.
 *
 * The provider is never called inside a database transaction. Each operation
 * is three steps: (1) a transaction records the attempt (the payment or refund
 * and a PENDING payment_transactions row; for AuthorizePayment and refunds the
 * idempotency key too, kit/idempotency.ts), (2) the provider is called with an
 * idempotency key of its own (our payment, capture, void or refund id), (3) a
 * transaction records the outcome with conditional UPDATEs from the PENDING
 * state, so whoever records first wins and a late duplicate changes nothing.
 * A call that dies between (2) and (3) leaves the PENDING rows behind: the same
 * request resumes them (the provider answers the same), and the
 * reconciliation job (reconcile.ts) asks the provider about what is left.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import {
  type AuthorizePaymentRequest,
  AuthorizePaymentRequestSchema,
  AuthorizePaymentResponseSchema,
  type CapturePaymentRequest,
  type Payment,
  type Refund,
  type RefundPaymentRequest,
  RefundPaymentRequestSchema,
  RefundPaymentResponseSchema,
  RefundReason,
  type VoidPaymentRequest,
} from "../../gen/ecommerce/payment/v1/payment_pb.js";
import {
  PaymentAuthorizedSchema,
  PaymentFailedSchema,
  PaymentFailureStage,
  PaymentInitiatedSchema,
  PaymentRefundedSchema,
  PaymentRefundFailedSchema,
  PaymentSucceededSchema,
  PaymentVoidedSchema,
} from "../../gen/ecommerce/payment/v1/events_pb.js";
import type { PeerClients } from "../../kit/clients.ts";
import { currentCall } from "../../kit/context.ts";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { domainError, failedPrecondition, invalidArgument, isUniqueViolation, notFound, unavailable } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { idempotent } from "../../kit/idempotency.ts";
import { money } from "../../kit/money.ts";
import { flushUnique, sqlOf } from "../../kit/sql.ts";
import { commitThenFail, transaction } from "../../kit/transaction.ts";
import type { PaymentConfig } from "./config.ts";
import { PaymentEntity, PaymentMethodEntity, PaymentTransactionEntity, RefundEntity } from "./entities.ts";
import { loadPayment, loadRefund, refundReason } from "./mapping.ts";
import { cardBrands, paymentMethodTypes } from "../../kit/enums.ts";
import { type MethodDisplay, type PaymentProvider, type ProviderOutcome, ProviderUnavailable } from "./provider.ts";
import type { Providers } from "./providers.ts";

type Out<T> = Omit<T, "$typeName">;

export interface PaymentDeps {
  config: PaymentConfig;
  providers: Providers;
  peers: PeerClients;
}

const attempts = 3;

/**
 * Calls the provider up to three times on transient failures, with backoff,
 * within the inbound call's deadline; UNAVAILABLE PROVIDER_UNAVAILABLE when it
 * never answered (the PENDING rows stay for a retry with the same key).
 */
async function callProvider<T>(what: string, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const signal = currentCall()?.signal ?? new AbortController().signal;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(signal);
    } catch (error) {
      if (!(error instanceof ProviderUnavailable)) throw error;
      if (attempt === attempts || signal.aborted) {
        throw unavailable(`the payment provider did not answer the ${what}; retry with the same request`, "PROVIDER_UNAVAILABLE", 1000);
      }
      await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
    }
  }
}

const methodDetails = (m: MethodDisplay | undefined) =>
  m ? { type: m.type, cardBrand: m.brand ?? null, last4: m.last4 ?? null, expiryMonth: m.expiryMonth ?? null, expiryYear: m.expiryYear ?? null } : undefined;

// ---------------------------------------------------------------- authorize

export async function authorizePayment(em: EntityManager, deps: PaymentDeps, req: AuthorizePaymentRequest): Promise<Out<{ payment: Payment }>> {
  const source = req.source;
  const provider = deps.providers.get(source.case === "paymentToken" ? source.value.provider : undefined);
  // The token is fetched (or taken) for this call only and never stored.
  let token: string;
  let saved: MethodDisplay | undefined;
  if (source.case === "paymentMethodId") {
    const answer = await deps.peers
      .client(UserService)
      .getPaymentMethodToken({ userId: req.userId, paymentMethodId: source.value })
      .catch((error: unknown) => {
        const e = ConnectError.from(error);
        if (e.code === Code.NotFound) {
          throw domainError(Code.NotFound, `payment method ${source.value} is not one of user ${req.userId}'s saved methods`, {
            reason: "PAYMENT_METHOD_NOT_FOUND",
            resource: { type: "payment method", name: source.value },
          });
        }
        throw e;
      });
    token = answer.providerToken;
    const m = answer.paymentMethod!;
    saved = {
      type: paymentMethodTypes.toDb(m.type) as MethodDisplay["type"],
      brand: cardBrands.toDbOrNull(m.cardBrand) ?? undefined,
      last4: m.last4 || undefined,
      expiryMonth: m.expiryMonth || undefined,
      expiryYear: m.expiryYear || undefined,
    };
  } else if (source.case === "paymentToken") {
    token = source.value.token;
  } else {
    throw invalidArgument("payment_method_id", "a payment method or a payment token is required");
  }

  /** What this call created, when it ran the first attempt (no need to read it back). */
  let created: { amountMinor: bigint; currency: string; description: string } | undefined;
  /** The unique index of an order's one live payment refused ours (the transaction is then aborted). */
  const taken = new Error("the order has a live payment");
  const started = await idempotent(
    em,
    { scope: "AuthorizePayment", key: req.idempotencyKey, requestSchema: AuthorizePaymentRequestSchema, request: req, responseSchema: AuthorizePaymentResponseSchema },
    async (tx) => {
      // An order has one live payment: the unique index payments_live_order says so at the flush, without a query first.
      const id = uuidv7();
      const amount = req.amount!;
      const methodId = saved ? uuidv7() : null;
      if (saved) tx.create(PaymentMethodEntity, { id: methodId!, userId: req.userId, provider: provider.name, ...methodDetails(saved)! });
      tx.create(PaymentEntity, {
        id,
        orderId: req.orderId,
        orderNumber: req.orderNumber,
        userId: req.userId,
        savedPaymentMethodId: source.case === "paymentMethodId" ? source.value : null,
        paymentMethodId: methodId,
        status: "pending",
        provider: provider.name,
        amountMinor: amount.amountMinor,
        currency: amount.currencyCode,
        description: req.description || `Order ${req.orderNumber}`,
        metadata: req.metadata,
      });
      tx.create(PaymentTransactionEntity, { id: uuidv7(), paymentId: id, type: "authorize", status: "pending", amountMinor: amount.amountMinor, currency: amount.currencyCode });
      publishEvent(tx, PaymentInitiatedSchema, {
        paymentId: id,
        orderId: req.orderId,
        orderNumber: req.orderNumber,
        userId: req.userId,
        amount,
        provider: provider.name,
      });
      await flushUnique(tx, () => taken);
      created = { amountMinor: amount.amountMinor, currency: amount.currencyCode, description: req.description || `Order ${req.orderNumber}` };
      return create(AuthorizePaymentResponseSchema, { payment: { id } });
    },
  ).catch(async (error: unknown) => {
    if (error !== taken) throw error;
    const live = await sqlOf(em).one<{ id: string }>("select id from payments where order_id = $1 and status not in ('failed', 'cancelled')", [req.orderId]);
    throw alreadyLive(req.orderId, live?.id ?? "");
  });
  const paymentId = started.payment!.id;
  // A retried key reads the payment's state; the first attempt knows it (PENDING, just committed).
  const current = created
    ? { status: "pending", amount_minor: created.amountMinor.toString(), currency: created.currency, description: created.description }
    : await sqlOf(em).one<{ status: string; amount_minor: string; currency: string; description: string }>("select status, amount_minor, currency, description from payments where id = $1", [
        paymentId,
      ]);
  if (current?.status === "pending") {
    const outcome = await callProvider("authorization", (signal) =>
      provider.authorize({ paymentId, amountMinor: BigInt(current.amount_minor), currency: current.currency, token, description: current.description }, signal),
    );
    await testHalt(deps, "before_record", paymentId);
    const recorded = await em.transactional((tx) => recordAuthorization(tx, deps.config, paymentId, outcome.status === "succeeded" ? "authorized" : outcome.status, outcome));
    if (!recorded && outcome.status === "succeeded") await releaseIfVoided(em, provider, paymentId, outcome.providerId);
    await testHalt(deps, "after_record", paymentId);
  }
  return { payment: await loadPayment(em, paymentId, "internal") };
}

/** PAYMENT_TEST_HALT_AFTER_PROVIDER (tests only): the call never answers from here on, until the process is killed. */
async function testHalt(deps: PaymentDeps, where: "before_record" | "after_record", paymentId: string): Promise<void> {
  if (deps.config.testHaltAfterProvider !== where) return;
  process.stderr.write(`PAYMENT_TEST_HALT_AFTER_PROVIDER=${where}: AuthorizePayment of payment ${paymentId} halted\n`);
  await new Promise<never>(() => undefined);
}

/** The payment was voided while the provider was authorizing it: the hold is released at the provider too. */
async function releaseIfVoided(em: EntityManager, provider: PaymentProvider, paymentId: string, providerPaymentId: string): Promise<void> {
  const row = await sqlOf(em).one<{ status: string }>("select status from payments where id = $1", [paymentId]);
  if (row?.status !== "cancelled" || !providerPaymentId) return;
  await callProvider("void", (signal) => provider.void(providerPaymentId, `void-late-${paymentId}`, signal));
  await sqlOf(em).run("update payments set provider_payment_id = coalesce(provider_payment_id, $2) where id = $1", [paymentId, providerPaymentId]);
}

function alreadyLive(orderId: string, paymentId: string) {
  return failedPrecondition(`order ${orderId} already has a live payment; void it before authorizing another`, "PAYMENT_ALREADY_EXISTS", paymentId ? { payment_id: paymentId } : undefined);
}

export interface AuthorizationOutcome {
  providerId: string;
  failureCode?: string;
  failureMessage?: string;
  method?: MethodDisplay;
  raw: Record<string, unknown>;
}

/**
 * Records what the provider says about an authorization (its answer, a
 * webhook, reconciliation), moving the payment forward only: PROCESSING from
 * PENDING, AUTHORIZED or FAILED from PENDING or PROCESSING. False when the
 * payment was already past that state (nothing changes).
 */
export async function recordAuthorization(tx: EntityManager, config: PaymentConfig, paymentId: string, status: "authorized" | "failed" | "processing", outcome: AuthorizationOutcome): Promise<boolean> {
  const db = sqlOf(tx);
  const from = status === "processing" ? ["pending"] : ["pending", "processing"];
  // A one-time token's display data comes from the provider's answer: its row gets this id if the payment has none yet.
  const methodId = outcome.method ? uuidv7() : null;
  // One statement: the payment forward, and (for a final outcome) its pending AUTHORIZE row, only if the payment moved.
  const row = await db.one<{ order_id: string; order_number: string; user_id: string; amount_minor: string; currency: string; payment_method_id: string | null; provider: string }>(
    `with p as (
       update payments set status = $2, provider_payment_id = coalesce(provider_payment_id, nullif($3, '')), failure_code = $4, failure_message = $5,
         authorized_at = case when $2 = 'authorized' then now() end,
         authorization_expires_at = case when $2 = 'authorized' then now() + ($6 * interval '1 millisecond') end,
         payment_method_id = coalesce(payment_method_id, $8::uuid),
         processed_at = now(), updated_at = now()
       where id = $1 and status = any($7::text[])
       returning id, order_id, order_number, user_id, amount_minor, currency, payment_method_id, provider
     ), authorization_row as (
       update payment_transactions set status = $9, provider_transaction_id = nullif($3, ''), failure_code = $4, failure_message = $5, provider_response = $10, processed_at = now()
       where payment_id = (select id from p) and type = 'authorize' and status = 'pending' and $9 <> 'pending'
     )
     select order_id, order_number, user_id, amount_minor, currency, payment_method_id, provider from p`,
    [
      paymentId,
      status,
      outcome.providerId,
      outcome.failureCode ?? null,
      outcome.failureMessage ?? null,
      config.authorizationTtlMs,
      from,
      methodId,
      status === "authorized" ? "succeeded" : status === "failed" ? "failed" : "pending",
      JSON.stringify(outcome.raw),
    ],
  );
  if (!row) return false;
  if (methodId && row.payment_method_id === methodId) {
    // The payment's reference to it is checked at commit (deferred): the row goes out with the commit's flush.
    tx.create(PaymentMethodEntity, { id: methodId, userId: row.user_id, provider: row.provider, providerReference: outcome.method!.reference ?? null, ...methodDetails(outcome.method)! });
  }
  const amount = money(row.amount_minor, row.currency);
  if (status === "authorized") {
    publishEvent(tx, PaymentAuthorizedSchema, { paymentId, orderId: row.order_id, userId: row.user_id, amount, authorizationExpiresAt: timestampOf(new Date(Date.now() + config.authorizationTtlMs)) });
  } else if (status === "failed") {
    publishEvent(tx, PaymentFailedSchema, {
      paymentId,
      orderId: row.order_id,
      orderNumber: row.order_number,
      userId: row.user_id,
      amount,
      stage: PaymentFailureStage.AUTHORIZATION,
      failureCode: outcome.failureCode ?? "",
      failureMessage: outcome.failureMessage ?? "",
    });
  }
  return true;
}

// ---------------------------------------------------------------- capture

interface PaymentState {
  status: string;
  provider: string;
  provider_payment_id: string | null;
  amount_minor: string;
  currency: string;
  /** The hold lapsed (authorization_expires_at passed). */
  expired: boolean;
  order_id: string;
  order_number: string;
  user_id: string;
}

async function paymentState(em: EntityManager, id: string): Promise<PaymentState> {
  const row = await sqlOf(em).one<PaymentState>(
    "select status, provider, provider_payment_id, amount_minor, currency, coalesce(authorization_expires_at <= now(), false) as expired, order_id, order_number, user_id from payments where id = $1",
    [id],
  );
  if (!row) throw notFound("payment", id);
  return row;
}

export async function capturePayment(em: EntityManager, deps: PaymentDeps, req: CapturePaymentRequest): Promise<Out<{ payment: Payment }>> {
  const p = await paymentState(em, req.paymentId);
  if (req.amount && req.amount.currencyCode !== p.currency) {
    throw invalidArgument("amount.currency_code", `the payment is in ${p.currency}, not ${req.amount.currencyCode}`, "CURRENCY_MISMATCH");
  }
  const authorized = BigInt(p.amount_minor);
  const amount = req.amount?.amountMinor ?? authorized;
  const db = sqlOf(em);
  let capture = await db.one<{ id: string; amount_minor: string; status: string }>(
    "select id, amount_minor, status from payment_transactions where payment_id = $1 and type = 'capture' and status <> 'failed'",
    [req.paymentId],
  );
  if (capture) {
    // Captured (or being captured) once: the same amount (or none) is the same capture, another amount is refused.
    if (req.amount && BigInt(capture.amount_minor) !== amount) {
      throw failedPrecondition(`payment ${req.paymentId} was captured with ${capture.amount_minor} minor units; a payment is captured once`, "ALREADY_CAPTURED", {
        captured_minor: capture.amount_minor,
      });
    }
    if (capture.status === "succeeded") return { payment: await loadPayment(em, req.paymentId, "internal") };
  } else {
    if (p.status !== "authorized") throw failedPrecondition(`payment ${req.paymentId} is ${p.status}, not authorized`, "PAYMENT_NOT_AUTHORIZED", { status: p.status });
    if (p.expired) {
      await transaction(em, async (tx) => {
        await sqlOf(tx).run("update payments set status = 'cancelled', cancelled_at = now(), updated_at = now() where id = $1 and status = 'authorized'", [req.paymentId]);
        commitThenFail(failedPrecondition(`the authorization of payment ${req.paymentId} expired; authorize a new payment`, "AUTHORIZATION_EXPIRED"));
      });
    }
    if (amount > authorized) {
      throw failedPrecondition(`the capture (${amount}) exceeds the authorized ${authorized} minor units`, "CAPTURE_EXCEEDS_AUTHORIZED", { authorized_minor: authorized.toString() });
    }
    const id = uuidv7();
    try {
      await em.transactional(async (tx) => {
        // Under the payment's row lock, which a void's update takes too: a capture and a void never both win.
        const now = await sqlOf(tx).one<{ status: string }>("select status from payments where id = $1 for update", [req.paymentId]);
        const voiding = await sqlOf(tx).one("select 1 from payment_transactions where payment_id = $1 and type = 'void' and status = 'pending'", [req.paymentId]);
        if (voiding) throw failedPrecondition(`payment ${req.paymentId} is being voided`, "PAYMENT_NOT_AUTHORIZED", { status: "cancelled" });
        if (now?.status !== "authorized") {
          throw failedPrecondition(`payment ${req.paymentId} is ${now?.status}, not authorized`, "PAYMENT_NOT_AUTHORIZED", { status: now?.status ?? "" });
        }
        tx.create(PaymentTransactionEntity, { id, paymentId: req.paymentId, type: "capture", status: "pending", amountMinor: amount, currency: p.currency });
      });
    } catch (error) {
      // A concurrent capture won: answer as it does.
      if (isUniqueViolation(error)) return capturePayment(em, deps, req);
      throw error;
    }
    capture = { id, amount_minor: amount.toString(), status: "pending" };
  }
  const captureId = capture.id;
  const captureMinor = BigInt(capture.amount_minor);
  const provider = deps.providers.get(p.provider);
  const outcome = await callProvider("capture", (signal) => provider.capture(p.provider_payment_id!, captureMinor, captureId, signal));
  await transaction(em, async (tx) => {
    if ((await recordCapture(tx, req.paymentId, captureId, outcome)) && outcome.status === "failed") {
      commitThenFail(
        failedPrecondition(`the provider refused the capture: ${outcome.failureMessage ?? outcome.failureCode}`, "CAPTURE_FAILED", { failure_code: outcome.failureCode ?? "" }),
      );
    }
  });
  return { payment: await loadPayment(em, req.paymentId, "internal") };
}

/**
 * Records the provider's answer to a CAPTURE (the call's own, or
 * reconciliation's): the row from PENDING, the payment SUCCEEDED and
 * payment.succeeded, once; false when another call recorded it first.
 */
export async function recordCapture(tx: EntityManager, paymentId: string, captureId: string, outcome: ProviderOutcome): Promise<boolean> {
  const t = await recordOperation(tx, captureId, outcome);
  if (!t) return false;
  if (outcome.status === "failed") return true;
  const p = (await sqlOf(tx).one<{ order_id: string; order_number: string; user_id: string; currency: string; provider: string }>(
    // SUCCEEDED from AUTHORIZED (the only state a capture is started from); the row is read for the event either way.
    `update payments set status = case when status = 'authorized' then 'succeeded' else status end,
        captured_at = case when status = 'authorized' then now() else captured_at end,
        processed_at = case when status = 'authorized' then now() else processed_at end, updated_at = now()
      where id = $1 returning order_id, order_number, user_id, currency, provider`,
    [paymentId],
  ))!;
  publishEvent(tx, PaymentSucceededSchema, {
    paymentId,
    orderId: p.order_id,
    orderNumber: p.order_number,
    userId: p.user_id,
    amountCaptured: money(t.amount_minor, p.currency),
    provider: p.provider,
  });
  return true;
}

/** The outcome of a CAPTURE, VOID or REFUND row, from PENDING only; undefined when another call recorded it first. */
async function recordOperation(tx: EntityManager, transactionId: string, outcome: ProviderOutcome): Promise<{ amount_minor: string; reason: string | null } | undefined> {
  return sqlOf(tx).one<{ amount_minor: string; reason: string | null }>(
    `update payment_transactions set status = $2, provider_transaction_id = nullif($3, ''), failure_code = $4, failure_message = $5, provider_response = $6, processed_at = now()
     where id = $1 and status = 'pending' returning amount_minor, reason`,
    [transactionId, outcome.status === "failed" ? "failed" : "succeeded", outcome.providerId, outcome.failureCode ?? null, outcome.failureMessage ?? null, JSON.stringify(outcome.raw)],
  );
}

// ---------------------------------------------------------------- void

export async function voidPayment(em: EntityManager, deps: PaymentDeps, req: VoidPaymentRequest): Promise<Out<{ payment: Payment }>> {
  const p = await paymentState(em, req.paymentId);
  if (p.status === "cancelled" || p.status === "failed") return { payment: await loadPayment(em, req.paymentId, "internal") };
  const capturing = await sqlOf(em).one("select 1 from payment_transactions where payment_id = $1 and type = 'capture' and status <> 'failed'", [req.paymentId]);
  if (capturing || !["pending", "processing", "authorized"].includes(p.status)) {
    throw failedPrecondition(`payment ${req.paymentId} was captured; refund it instead`, "PAYMENT_ALREADY_CAPTURED", { status: p.status });
  }
  const voidId = uuidv7();
  await em.transactional(async (tx) => {
    // Claimed under the payment's row lock, as a capture is: whichever records first wins.
    await sqlOf(tx).one("select 1 from payments where id = $1 for update", [req.paymentId]);
    const captured = await sqlOf(tx).one("select 1 from payment_transactions where payment_id = $1 and type = 'capture' and status <> 'failed'", [req.paymentId]);
    if (captured) throw failedPrecondition(`payment ${req.paymentId} was captured; refund it instead`, "PAYMENT_ALREADY_CAPTURED", { status: p.status });
    tx.create(PaymentTransactionEntity, { id: voidId, paymentId: req.paymentId, type: "void", status: "pending", amountMinor: BigInt(p.amount_minor), currency: p.currency, reason: req.reason || null });
  });
  const provider = deps.providers.get(p.provider);
  // Nothing to release at the provider when it never accepted the payment.
  const outcome: ProviderOutcome = p.provider_payment_id
    ? await callProvider("void", (signal) => provider.void(p.provider_payment_id!, voidId, signal))
    : { status: "succeeded", providerId: "", raw: {} };
  await em.transactional((tx) => recordVoid(tx, req.paymentId, voidId, outcome));
  return { payment: await loadPayment(em, req.paymentId, "internal") };
}

/**
 * Records the provider's answer to a VOID (the call's own, or
 * reconciliation's): the row from PENDING, the payment CANCELLED unless a
 * capture is recorded or in flight (the capture took the row lock to record
 * it), payment.voided once; false when another call recorded it first.
 */
export async function recordVoid(tx: EntityManager, paymentId: string, voidId: string, outcome: ProviderOutcome): Promise<boolean> {
  const t = await recordOperation(tx, voidId, outcome);
  if (!t) return false;
  if (outcome.status === "failed") return true;
  const db = sqlOf(tx);
  const p = await db.one<{ order_id: string; user_id: string; amount_minor: string; currency: string }>(
    `update payments set status = 'cancelled', cancelled_at = now(), updated_at = now() where id = $1 and status in ('pending', 'processing', 'authorized')
       and not exists (select 1 from payment_transactions where payment_id = $1 and type = 'capture' and status <> 'failed')
     returning order_id, user_id, amount_minor, currency`,
    [paymentId],
  );
  if (p) {
    await db.run("update payment_transactions set status = 'failed', failure_code = 'voided', processed_at = now() where payment_id = $1 and type = 'authorize' and status = 'pending'", [paymentId]);
    publishEvent(tx, PaymentVoidedSchema, { paymentId, orderId: p.order_id, userId: p.user_id, amount: money(p.amount_minor, p.currency), reason: t.reason ?? "" });
  }
  return true;
}

// ---------------------------------------------------------------- refund

/** RefundPayment and AdminRefundPayment: `initiatedBy` is the calling service's name or the admin's id. */
export async function refundPayment(
  em: EntityManager,
  deps: PaymentDeps,
  initiatedBy: string,
  req: Pick<RefundPaymentRequest, "paymentId" | "amount" | "reason" | "note" | "returnRequestId" | "metadata" | "idempotencyKey">,
  view: "internal" | "admin" = "internal",
): Promise<Out<{ refund: Refund }>> {
  const request = { ...req, $typeName: RefundPaymentRequestSchema.typeName } as RefundPaymentRequest;
  const started = await idempotent(
    em,
    { scope: `RefundPayment:${req.paymentId}`, key: req.idempotencyKey, requestSchema: RefundPaymentRequestSchema, request, responseSchema: RefundPaymentResponseSchema },
    async (tx) => {
      const db = sqlOf(tx);
      // The payment row's lock makes the check and the refund record one step: concurrent refunds queue here.
      const p = await db.one<{ status: string; currency: string; order_id: string; user_id: string }>("select status, currency, order_id, user_id from payments where id = $1 for update", [
        req.paymentId,
      ]);
      if (!p) throw notFound("payment", req.paymentId);
      // A REFUNDED payment has nothing refundable left: REFUND_EXCEEDS_CAPTURED below, with refundable_minor 0.
      if (!["succeeded", "partially_refunded", "refunded"].includes(p.status)) {
        throw failedPrecondition(`payment ${req.paymentId} is ${p.status}: nothing was captured; void it instead`, "PAYMENT_NOT_CAPTURED", { status: p.status });
      }
      if (req.amount && req.amount.currencyCode !== p.currency) {
        throw invalidArgument("amount.currency_code", `the payment is in ${p.currency}, not ${req.amount.currencyCode}`, "CURRENCY_MISMATCH");
      }
      const sums = (await db.one<{ refundable: string }>(
        `select coalesce((select sum(amount_minor) from payment_transactions where payment_id = $1 and type = 'capture' and status = 'succeeded'), 0)
              - coalesce((select sum(amount_minor) from refunds where payment_id = $1 and status <> 'failed'), 0) as refundable`,
        [req.paymentId],
      ))!;
      const refundable = BigInt(sums.refundable);
      const amount = req.amount?.amountMinor ?? refundable;
      if (amount <= 0n || amount > refundable) {
        throw failedPrecondition(`the refund exceeds what is refundable (${refundable} minor units)`, "REFUND_EXCEEDS_CAPTURED", { refundable_minor: refundable.toString() });
      }
      const id = uuidv7();
      tx.create(RefundEntity, {
        id,
        paymentId: req.paymentId,
        orderId: p.order_id,
        userId: p.user_id,
        amountMinor: amount,
        currency: p.currency,
        status: "pending",
        reason: refundReason.toDb(req.reason === RefundReason.UNSPECIFIED ? RefundReason.OTHER : req.reason),
        note: req.note,
        returnRequestId: req.returnRequestId || null,
        initiatedBy,
        metadata: req.metadata,
      });
      tx.create(PaymentTransactionEntity, { id: uuidv7(), paymentId: req.paymentId, type: "refund", status: "pending", amountMinor: amount, currency: p.currency, refundId: id });
      return create(RefundPaymentResponseSchema, { refund: { id } });
    },
  );
  const refundId = started.refund!.id;
  const r = (await sqlOf(em).one<{ status: string; amount_minor: string; provider: string; provider_payment_id: string; tx_id: string }>(
    `select r.status, r.amount_minor, p.provider, p.provider_payment_id, t.id as tx_id
       from refunds r join payments p on p.id = r.payment_id join payment_transactions t on t.refund_id = r.id where r.id = $1`,
    [refundId],
  ))!;
  if (r.status === "pending") {
    const provider = deps.providers.get(r.provider);
    const outcome = await callProvider("refund", (signal) => provider.refund(r.provider_payment_id, BigInt(r.amount_minor), refundId, signal));
    await em.transactional((tx) => recordRefund(tx, refundId, r.tx_id, outcome));
  }
  return { refund: await loadRefund(em, refundId, view) };
}

/**
 * Records the provider's answer to a refund (the call's own, or
 * reconciliation's): the refund COMPLETED or FAILED from PENDING, the
 * payment's status from its log, payment.refunded or payment.refund_failed
 * once; false when another call recorded it first.
 */
export async function recordRefund(tx: EntityManager, refundId: string, transactionId: string, outcome: ProviderOutcome): Promise<boolean> {
  if (!(await recordOperation(tx, transactionId, outcome))) return false;
  const db = sqlOf(tx);
  const completed = outcome.status !== "failed";
  const r = (await db.one<{ payment_id: string; order_id: string; user_id: string; amount_minor: string; currency: string; reason: string; note: string; return_request_id: string | null }>(
    `update refunds set status = $2, provider_refund_id = nullif($3, ''), failure_code = $4, failure_message = $5, processed_at = now(), updated_at = now()
     where id = $1 returning payment_id, order_id, user_id, amount_minor, currency, reason, note, return_request_id`,
    [refundId, completed ? "completed" : "failed", outcome.providerId, outcome.failureCode ?? null, outcome.failureMessage ?? null],
  ))!;
  if (!completed) {
    publishEvent(tx, PaymentRefundFailedSchema, {
      refundId,
      paymentId: r.payment_id,
      orderId: r.order_id,
      userId: r.user_id,
      amount: money(r.amount_minor, r.currency),
      returnRequestId: r.return_request_id ?? "",
      failureCode: outcome.failureCode ?? "",
      failureMessage: outcome.failureMessage ?? "",
    });
    return true;
  }
  // The payment's state follows from its log: everything captured refunded, or part of it.
  const p = (await db.one<{ order_number: string; provider: string; captured: string; refunded: string }>(
    `update payments p set status = case when s.refunded >= s.captured then 'refunded' else 'partially_refunded' end, updated_at = now()
       from (select coalesce(sum(amount_minor) filter (where type = 'capture' and status = 'succeeded'), 0) as captured,
                    coalesce(sum(amount_minor) filter (where type = 'refund' and status = 'succeeded'), 0) as refunded
               from payment_transactions where payment_id = $1) s
     where p.id = $1 returning p.order_number, p.provider, s.captured, s.refunded`,
    [r.payment_id],
  ))!;
  publishEvent(tx, PaymentRefundedSchema, {
    refundId,
    paymentId: r.payment_id,
    orderId: r.order_id,
    orderNumber: p.order_number,
    userId: r.user_id,
    amount: money(r.amount_minor, r.currency),
    amountRefundedTotal: money(p.refunded, r.currency),
    amountCaptured: money(p.captured, r.currency),
    fullyRefunded: BigInt(p.refunded) >= BigInt(p.captured),
    reason: refundReason.fromDb(r.reason),
    note: r.note,
    returnRequestId: r.return_request_id ?? "",
  });
  return true;
}
