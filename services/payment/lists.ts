/**
 * The list RPCs: ListPaymentsForOrder (customer), ListPaymentsForOrderInternal
 * (Order's compensation: every payment of an order, at most 100), ListPayments
 * and ListRefunds (admin). Newest first, keyset pages (created_at, id) with the
 * kit's signed page tokens; every filter a bound parameter.
 */
import type {
  ListPaymentsForOrderInternalRequest,
  ListPaymentsForOrderInternalResponse,
  ListPaymentsForOrderRequest,
  ListPaymentsForOrderResponse,
  ListPaymentsRequest,
  ListPaymentsResponse,
  ListRefundsRequest,
  ListRefundsResponse,
} from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { newestFirstPage } from "../../kit/paging.ts";
import { type Params, sqlOf } from "../../kit/sql.ts";
import { loadPayment, type PaymentRow, paymentMessage, paymentSelect, type RefundRow, refundMessage, paymentStatus, refundStatus } from "./mapping.ts";

type Out<T> = Omit<T, "$typeName">;

const paymentsSelect = paymentSelect.replace("select p.*,", "select p.*, p.created_at::text as created_key,");

export async function listPaymentsForOrder(em: EntityManager, userId: string, req: ListPaymentsForOrderRequest): Promise<Out<ListPaymentsForOrderResponse>> {
  const { rows, next } = await newestFirstPage<PaymentRow & { created_key: string }>(sqlOf(em), req, {
    select: paymentsSelect,
    alias: "p",
    where: (p) => [`p.order_id = ${p.add(req.orderId)}::uuid`, `p.user_id = ${p.add(userId)}::uuid`],
  });
  return { payments: await Promise.all(rows.map((r) => loadPayment(em, r.id, "customer", userId))), nextPageToken: next };
}

/** Every payment of the order (an order has at most one live one), newest first, internal view; at most 100. */
export async function listPaymentsForOrderInternal(em: EntityManager, req: ListPaymentsForOrderInternalRequest): Promise<Out<ListPaymentsForOrderInternalResponse>> {
  const rows = await sqlOf(em).all<{ id: string }>("select id from payments where order_id = $1::uuid order by created_at desc, id desc limit 100", [req.orderId]);
  return { payments: await Promise.all(rows.map((r) => loadPayment(em, r.id, "internal"))) };
}

export async function listPayments(em: EntityManager, req: ListPaymentsRequest): Promise<Out<ListPaymentsResponse>> {
  const where = (p: Params) => {
    const w: string[] = [];
    if (req.userId) w.push(`p.user_id = ${p.add(req.userId)}::uuid`);
    if (req.orderId) w.push(`p.order_id = ${p.add(req.orderId)}::uuid`);
    if (req.statuses.length) w.push(`p.status = any(${p.add(req.statuses.map((s) => paymentStatus.toDb(s)))}::text[])`);
    if (req.provider) w.push(`p.provider = ${p.add(req.provider)}`);
    if (req.createdAfter) w.push(`p.created_at >= ${p.add(dateOf(req.createdAfter))}`);
    if (req.createdBefore) w.push(`p.created_at < ${p.add(dateOf(req.createdBefore))}`);
    return w;
  };
  const { rows, next } = await newestFirstPage<PaymentRow & { created_key: string }>(sqlOf(em), req, { select: paymentsSelect, alias: "p", where });
  return { payments: rows.map((r) => paymentMessage(r, "admin")), nextPageToken: next };
}

export async function listRefunds(em: EntityManager, req: ListRefundsRequest): Promise<Out<ListRefundsResponse>> {
  const where = (p: Params) => {
    const w: string[] = [];
    if (req.paymentId) w.push(`r.payment_id = ${p.add(req.paymentId)}::uuid`);
    if (req.orderId) w.push(`r.order_id = ${p.add(req.orderId)}::uuid`);
    if (req.userId) w.push(`r.user_id = ${p.add(req.userId)}::uuid`);
    if (req.statuses.length) w.push(`r.status = any(${p.add(req.statuses.map((s) => refundStatus.toDb(s)))}::text[])`);
    if (req.createdAfter) w.push(`r.created_at >= ${p.add(dateOf(req.createdAfter))}`);
    if (req.createdBefore) w.push(`r.created_at < ${p.add(dateOf(req.createdBefore))}`);
    return w;
  };
  const select = "select r.*, r.created_at::text as created_key from refunds r";
  const { rows, next } = await newestFirstPage<RefundRow & { created_key: string }>(sqlOf(em), req, { select, alias: "r", where });
  return { refunds: rows.map((r) => refundMessage(r, "admin")), nextPageToken: next };
}
