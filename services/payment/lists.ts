/**
 * The list RPCs: ListPaymentsForOrder (customer), ListPayments and
 * ListRefunds (admin). Newest first, keyset pages (created_at, id) with the
 * kit's signed page tokens; every filter a bound parameter.
 */
import type {
  ListPaymentsForOrderRequest,
  ListPaymentsForOrderResponse,
  ListPaymentsRequest,
  ListPaymentsResponse,
  ListRefundsRequest,
  ListRefundsResponse,
} from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { pageOf } from "../../kit/paging.ts";
import { sqlOf } from "../../kit/sql.ts";
import { loadPayment, type PaymentRow, paymentMessage, paymentSelect, type RefundRow, refundMessage, paymentStatus, refundStatus } from "./mapping.ts";

type Out<T> = Omit<T, "$typeName">;

async function page<Row extends { id: string; created_key: string }>(
  em: EntityManager,
  req: { pageSize: number; pageToken: string; $typeName: string },
  select: string,
  alias: string,
  filters: (add: (v: unknown) => string) => string[],
): Promise<{ rows: Row[]; next: string }> {
  const pages = pageOf(req, { t: "timestamptz", i: "uuid" });
  const params: unknown[] = [];
  const $ = (v: unknown) => (params.push(v), `$${params.length}`);
  const where = filters($);
  if (pages.after) where.push(`(${alias}.created_at, ${alias}.id) < (${$(pages.after.t)}::timestamptz, ${$(pages.after.i)}::uuid)`);
  const rows = await sqlOf(em).all<Row>(
    `${select} ${where.length ? `where ${where.join(" and ")}` : ""} order by ${alias}.created_at desc, ${alias}.id desc limit ${$(pages.size + 1)}`,
    params,
  );
  const shown = rows.slice(0, pages.size);
  const last = shown[shown.length - 1];
  return { rows: shown, next: rows.length > pages.size && last ? pages.next({ t: last.created_key, i: last.id }) : "" };
}

const paymentsSelect = paymentSelect.replace("select p.*,", "select p.*, p.created_at::text as created_key,");

export async function listPaymentsForOrder(em: EntityManager, userId: string, req: ListPaymentsForOrderRequest): Promise<Out<ListPaymentsForOrderResponse>> {
  const { rows, next } = await page<PaymentRow & { created_key: string }>(em, req, paymentsSelect, "p", ($) => [`p.order_id = ${$(req.orderId)}::uuid`, `p.user_id = ${$(userId)}::uuid`]);
  return { payments: await Promise.all(rows.map((r) => loadPayment(em, r.id, "customer", userId))), nextPageToken: next };
}

export async function listPayments(em: EntityManager, req: ListPaymentsRequest): Promise<Out<ListPaymentsResponse>> {
  const { rows, next } = await page<PaymentRow & { created_key: string }>(em, req, paymentsSelect, "p", ($) => {
    const where: string[] = [];
    if (req.userId) where.push(`p.user_id = ${$(req.userId)}::uuid`);
    if (req.orderId) where.push(`p.order_id = ${$(req.orderId)}::uuid`);
    if (req.statuses.length) where.push(`p.status = any(${$(req.statuses.map((s) => paymentStatus.toDb(s)))}::text[])`);
    if (req.provider) where.push(`p.provider = ${$(req.provider)}`);
    if (req.createdAfter) where.push(`p.created_at >= ${$(dateOf(req.createdAfter))}`);
    if (req.createdBefore) where.push(`p.created_at < ${$(dateOf(req.createdBefore))}`);
    return where;
  });
  return { payments: rows.map((r) => paymentMessage(r, "admin")), nextPageToken: next };
}

export async function listRefunds(em: EntityManager, req: ListRefundsRequest): Promise<Out<ListRefundsResponse>> {
  const { rows, next } = await page<RefundRow & { created_key: string }>(em, req, "select r.*, r.created_at::text as created_key from refunds r", "r", ($) => {
    const where: string[] = [];
    if (req.paymentId) where.push(`r.payment_id = ${$(req.paymentId)}::uuid`);
    if (req.orderId) where.push(`r.order_id = ${$(req.orderId)}::uuid`);
    if (req.userId) where.push(`r.user_id = ${$(req.userId)}::uuid`);
    if (req.statuses.length) where.push(`r.status = any(${$(req.statuses.map((s) => refundStatus.toDb(s)))}::text[])`);
    if (req.createdAfter) where.push(`r.created_at >= ${$(dateOf(req.createdAfter))}`);
    if (req.createdBefore) where.push(`r.created_at < ${$(dateOf(req.createdBefore))}`);
    return where;
  });
  return { refunds: rows.map((r) => refundMessage(r, "admin")), nextPageToken: next };
}
