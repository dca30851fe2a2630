/**
 * Rows to contract messages. A payment's captured and refunded amounts are
 * derived from its payment_transactions (succeeded CAPTURE and REFUND rows),
 * never stored apart, so they cannot disagree with the log.
 */
import { create } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import {
  type Payment,
  PaymentMethodDetailsSchema,
  PaymentSchema,
  PaymentStatus,
  PaymentTransactionSchema,
  type Refund,
  RefundReason,
  RefundSchema,
  RefundStatus,
  TransactionStatus,
  TransactionType,
  type WebhookEvent,
  WebhookEventSchema,
  WebhookEventStatus,
} from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { cardBrands, dbEnum, paymentMethodTypes } from "../../kit/enums.ts";
import { notFound } from "../../kit/errors.ts";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";

export const paymentStatus = dbEnum<PaymentStatus>([
  [PaymentStatus.PENDING, "pending"],
  [PaymentStatus.PROCESSING, "processing"],
  [PaymentStatus.AUTHORIZED, "authorized"],
  [PaymentStatus.SUCCEEDED, "succeeded"],
  [PaymentStatus.FAILED, "failed"],
  [PaymentStatus.CANCELLED, "cancelled"],
  [PaymentStatus.PARTIALLY_REFUNDED, "partially_refunded"],
  [PaymentStatus.REFUNDED, "refunded"],
]);
export const transactionType = dbEnum([
  [TransactionType.AUTHORIZE, "authorize"],
  [TransactionType.CAPTURE, "capture"],
  [TransactionType.VOID, "void"],
  [TransactionType.REFUND, "refund"],
]);
export const transactionStatus = dbEnum([
  [TransactionStatus.PENDING, "pending"],
  [TransactionStatus.SUCCEEDED, "succeeded"],
  [TransactionStatus.FAILED, "failed"],
]);
export const refundStatus = dbEnum<RefundStatus>([
  [RefundStatus.PENDING, "pending"],
  [RefundStatus.PROCESSING, "processing"],
  [RefundStatus.COMPLETED, "completed"],
  [RefundStatus.FAILED, "failed"],
]);
export const refundReason = dbEnum<RefundReason>([
  [RefundReason.ORDER_CANCELLED, "order_cancelled"],
  [RefundReason.RETURN, "return"],
  [RefundReason.GOODWILL, "goodwill"],
  [RefundReason.DUPLICATE, "duplicate"],
  [RefundReason.FRAUDULENT, "fraudulent"],
  [RefundReason.OTHER, "other"],
]);
export const webhookStatus = dbEnum<WebhookEventStatus>([
  [WebhookEventStatus.PENDING, "pending"],
  [WebhookEventStatus.PROCESSED, "processed"],
  [WebhookEventStatus.FAILED, "failed"],
  [WebhookEventStatus.IGNORED, "ignored"],
]);

/** customer: no provider ids or raw responses; internal: provider ids; admin: everything. */
export type View = "customer" | "internal" | "admin";

export interface PaymentRow {
  id: string;
  order_id: string;
  order_number: string;
  user_id: string;
  saved_payment_method_id: string | null;
  status: string;
  provider: string;
  provider_payment_id: string | null;
  amount_minor: string;
  currency: string;
  description: string;
  metadata: Record<string, string>;
  failure_code: string | null;
  failure_message: string | null;
  authorized_at: Date | null;
  authorization_expires_at: Date | null;
  captured_at: Date | null;
  cancelled_at: Date | null;
  processed_at: Date | null;
  created_at: Date;
  updated_at: Date;
  m_type: string | null;
  m_brand: string | null;
  m_last4: string | null;
  m_month: number | null;
  m_year: number | null;
  captured_minor: string;
  refunded_minor: string;
}

/** One statement: the payment, its method's display data and the sums of its log. */
export const paymentSelect = `select p.*, m.type as m_type, m.card_brand as m_brand, m.last4 as m_last4, m.expiry_month as m_month, m.expiry_year as m_year,
    coalesce((select sum(t.amount_minor) from payment_transactions t where t.payment_id = p.id and t.type = 'capture' and t.status = 'succeeded'), 0) as captured_minor,
    coalesce((select sum(t.amount_minor) from payment_transactions t where t.payment_id = p.id and t.type = 'refund' and t.status = 'succeeded'), 0) as refunded_minor
  from payments p left join payment_methods m on m.id = p.payment_method_id`;

export interface RefundRow {
  id: string;
  payment_id: string;
  order_id: string;
  user_id: string;
  amount_minor: string;
  currency: string;
  status: string;
  reason: string;
  note: string;
  return_request_id: string | null;
  initiated_by: string;
  provider_refund_id: string | null;
  failure_code: string | null;
  failure_message: string | null;
  metadata: Record<string, string>;
  processed_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export function refundMessage(r: RefundRow, view: View): Refund {
  return create(RefundSchema, {
    id: r.id,
    paymentId: r.payment_id,
    orderId: r.order_id,
    userId: r.user_id,
    amount: money(r.amount_minor, r.currency),
    status: refundStatus.fromDb(r.status),
    reason: refundReason.fromDb(r.reason),
    note: r.note,
    returnRequestId: r.return_request_id ?? "",
    initiatedBy: view === "admin" ? r.initiated_by : "",
    providerRefundId: view === "customer" ? "" : (r.provider_refund_id ?? ""),
    failureCode: r.failure_code ?? "",
    failureMessage: r.failure_message ?? "",
    metadata: r.metadata,
    processedAt: timestampOf(r.processed_at),
    createdAt: timestampOf(r.created_at),
    updatedAt: timestampOf(r.updated_at),
  });
}

/** A payment with its transactions and refunds (oldest first), as `view` may see it; NOT_FOUND unless `userId` (when given) owns it. */
export async function loadPayment(em: EntityManager, id: string, view: View, userId?: string): Promise<Payment> {
  // One statement: the payment row, and its log and refunds as JSON (bigints as text, so no precision is lost).
  const row = await sqlOf(em).one<PaymentRow & { transactions_json: TransactionJson[]; refunds_json: RefundJson[] }>(
    `select x.*,
       (select coalesce(jsonb_agg(to_jsonb(t) || jsonb_build_object('amount_minor', t.amount_minor::text) order by t.created_at, t.id), '[]')
          from payment_transactions t where t.payment_id = x.id) as transactions_json,
       (select coalesce(jsonb_agg(to_jsonb(r) || jsonb_build_object('amount_minor', r.amount_minor::text) order by r.created_at, r.id), '[]')
          from refunds r where r.payment_id = x.id) as refunds_json
     from (${paymentSelect} where p.id = $1) x`,
    [id],
  );
  if (!row || (userId !== undefined && row.user_id !== userId)) throw notFound("payment", id);
  const payment = paymentMessage(row, view);
  payment.transactions = row.transactions_json.map((t) =>
    create(PaymentTransactionSchema, {
      id: t.id,
      paymentId: id,
      type: transactionType.fromDb(t.type),
      status: transactionStatus.fromDb(t.status),
      amount: money(t.amount_minor, t.currency),
      refundId: t.refund_id ?? "",
      providerTransactionId: view === "customer" ? "" : (t.provider_transaction_id ?? ""),
      failureCode: t.failure_code ?? "",
      failureMessage: t.failure_message ?? "",
      providerResponse: view === "admin" && t.provider_response ? t.provider_response : undefined,
      processedAt: timestampOf(dateOrNull(t.processed_at)),
      createdAt: timestampOf(new Date(t.created_at)),
    }),
  );
  payment.refunds = row.refunds_json.map((r) =>
    refundMessage({ ...r, processed_at: dateOrNull(r.processed_at), created_at: new Date(r.created_at), updated_at: new Date(r.updated_at) }, view),
  );
  return payment;
}

/** A payment_transactions row as to_jsonb gives it (times as ISO 8601 text, amount_minor as text). */
interface TransactionJson {
  id: string;
  type: string;
  status: string;
  amount_minor: string;
  currency: string;
  refund_id: string | null;
  provider_transaction_id: string | null;
  failure_code: string | null;
  failure_message: string | null;
  provider_response: JsonObject | null;
  processed_at: string | null;
  created_at: string;
}

/** A refunds row as to_jsonb gives it. */
type RefundJson = Omit<RefundRow, "processed_at" | "created_at" | "updated_at"> & { processed_at: string | null; created_at: string; updated_at: string };

const dateOrNull = (iso: string | null) => (iso === null ? null : new Date(iso));

export function paymentMessage(p: PaymentRow, view: View): Payment {
  return create(PaymentSchema, {
    id: p.id,
    orderId: p.order_id,
    orderNumber: p.order_number,
    userId: p.user_id,
    status: paymentStatus.fromDb(p.status),
    provider: p.provider,
    providerPaymentId: view === "customer" ? "" : (p.provider_payment_id ?? ""),
    amount: money(p.amount_minor, p.currency),
    amountCaptured: money(p.captured_minor, p.currency),
    amountRefunded: money(p.refunded_minor, p.currency),
    currencyCode: p.currency,
    description: p.description,
    failureCode: p.failure_code ?? "",
    failureMessage: p.failure_message ?? "",
    paymentMethod: p.m_type
      ? create(PaymentMethodDetailsSchema, {
          type: paymentMethodTypes.fromDb(p.m_type),
          cardBrand: cardBrands.fromDbOrUnspecified(p.m_brand),
          last4: p.m_last4 ?? "",
          expiryMonth: p.m_month ?? 0,
          expiryYear: p.m_year ?? 0,
        })
      : undefined,
    paymentMethodId: p.saved_payment_method_id ?? "",
    metadata: p.metadata,
    authorizedAt: timestampOf(p.authorized_at),
    authorizationExpiresAt: timestampOf(p.authorization_expires_at),
    capturedAt: timestampOf(p.captured_at),
    cancelledAt: timestampOf(p.cancelled_at),
    processedAt: timestampOf(p.processed_at),
    createdAt: timestampOf(p.created_at),
    updatedAt: timestampOf(p.updated_at),
  });
}

export async function loadRefund(em: EntityManager, id: string, view: View, userId?: string): Promise<Refund> {
  const row = await sqlOf(em).one<RefundRow>("select * from refunds where id = $1", [id]);
  if (!row || (userId !== undefined && row.user_id !== userId)) throw notFound("refund", id);
  return refundMessage(row, view);
}

export function webhookMessage(
  w: { id: string; provider: string; event_type: string; provider_event_id: string; status: string; error: string | null; payment_id: string | null; refund_id: string | null; attempts: number; payload: Buffer; processed_at: Date | null; created_at: Date },
  includePayload: boolean,
): WebhookEvent {
  return create(WebhookEventSchema, {
    id: w.id,
    provider: w.provider,
    eventType: w.event_type,
    providerEventId: w.provider_event_id,
    status: webhookStatus.fromDb(w.status),
    error: w.error ?? "",
    paymentId: w.payment_id ?? "",
    refundId: w.refund_id ?? "",
    attempts: w.attempts,
    payload: includePayload ? new Uint8Array(w.payload) : new Uint8Array(),
    processedAt: timestampOf(w.processed_at),
    createdAt: timestampOf(w.created_at),
  });
}
