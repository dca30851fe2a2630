/**
 * The order after checkout: reads and lists (keyset pages), cancellation
 * (customer and admin), the admin's status changes and notes, the payment
 * and shipment updates, and the verified-purchase check.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { v7 as uuidv7 } from "uuid";
import { DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { CancellationPaymentAction, OrderCancelledSchema, OrderDeliveredSchema, OrderShippedSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import {
  type AddOrderNoteRequest,
  type ApplyPaymentUpdateRequest,
  type CheckVerifiedPurchaseRequest,
  type ListMyOrdersRequest,
  type ListOrderNotesRequest,
  type ListOrdersRequest,
  type Order,
  OrderActorType,
  OrderNoteVisibility,
  OrderPaymentStatus,
  OrderStatus,
  type UpdateOrderRequest,
  type UpdateOrderStatusRequest,
} from "../../gen/ecommerce/order/v1/order_pb.js";
import { PaymentService, PaymentStatus, RefundReason } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import type { PeerClients } from "../../kit/clients.ts";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { domainError, errorReason, failedPrecondition, invalidArgument, notFound } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { money } from "../../kit/money.ts";
import { pageOf } from "../../kit/paging.ts";
import { Params, sqlOf } from "../../kit/sql.ts";
import { OrderNoteEntity } from "./entities.ts";
import { actorTypes, addressJson, loadOrder, orderRow, type OrderRow, orderStatuses, ordersToMessages, paymentStatuses, type View } from "./mapping.ts";
import { peerFailure } from "./pricing.ts";
import { type Actor, systemActor, transition } from "./state.ts";

const system = systemActor(OrderActorType.SYSTEM);

// ------------------------------------------------------------------ reads

export async function getOrderByNumber(em: EntityManager, userId: string, orderNumber: string): Promise<Order> {
  const row = await sqlOf(em).one<{ id: string }>("select id from orders where upper(order_number) = upper($1) and user_id = $2", [orderNumber, userId]);
  if (!row) throw notFound("order", orderNumber);
  return loadOrder(em, row.id, "customer", userId);
}

const listCursor = { key: ["timestamptz", "uuid"] } as const;

export async function listMyOrders(em: EntityManager, userId: string, req: ListMyOrdersRequest): Promise<{ orders: Order[]; nextPageToken: string }> {
  const page = pageOf(req, listCursor);
  const params = new Params();
  const where = [`user_id = ${params.add(userId)}`, "(announced or status = 'payment_failed' or (status = 'cancelled' and payment_id is not null))"];
  if (req.statuses.length > 0) where.push(`status = any(${params.add(req.statuses.map((s) => orderStatuses.toDb(s)))}::text[])`);
  else where.push("status <> 'payment_failed'");
  if (page.after) where.push(`(created_at, id) < (${params.add(page.after.key[0])}::timestamptz, ${params.add(page.after.key[1])}::uuid)`);
  const rows = await sqlOf(em).all<OrderRow>(`select * from orders where ${where.join(" and ")} order by created_at desc, id desc limit ${params.add(page.size + 1)}`, params.values);
  const more = rows.length > page.size;
  const shown = rows.slice(0, page.size);
  const last = shown.at(-1);
  return {
    orders: await ordersToMessages(em, shown, "list"),
    nextPageToken: more && last ? page.next({ key: [String(last.created_at), last.id] }) : "",
  };
}

const sortColumns: Record<string, { column: string; type: "timestamptz" | "bigint" }> = {
  created_at: { column: "created_at", type: "timestamptz" },
  updated_at: { column: "updated_at", type: "timestamptz" },
  total_amount: { column: "total_minor", type: "bigint" },
};

/**
 * The orders the back office lists: announced, or kept as a record of a payment. The
 * partial indexes of migrations/0004_order_list_indexes.ts carry this very text.
 */
const backOffice = "(announced or status = 'payment_failed' or payment_id is not null)";

/**
 * `column = any(values)`; `column = value` for one value, so that an index led by the
 * column (orders_status_created) returns the rows in created order: no sort of the matches.
 */
const oneOf = (params: Params, column: string, values: string[]) =>
  values.length === 1 ? `${column} = ${params.add(values[0])}` : `${column} = any(${params.add(values)}::text[])`;

export async function listOrders(em: EntityManager, req: ListOrdersRequest): Promise<{ orders: Order[]; nextPageToken: string; totalSize: number }> {
  const [field = "created_at", dir = "desc"] = (req.orderBy || "created_at desc").split(" ");
  const sort = sortColumns[field]!;
  const page = pageOf(req, { key: ["text", "uuid"] } as const);
  const params = new Params();
  const where = [backOffice];
  if (req.userId) where.push(`user_id = ${params.add(req.userId)}`);
  if (req.statuses.length > 0) where.push(oneOf(params, "status", req.statuses.map((s) => orderStatuses.toDb(s))));
  if (req.paymentStatuses.length > 0) where.push(oneOf(params, "payment_status", req.paymentStatuses.map((s) => paymentStatuses.toDb(s))));
  if (req.createdAfter) where.push(`created_at >= ${params.add(timestampDate(req.createdAfter))}`);
  if (req.createdBefore) where.push(`created_at < ${params.add(timestampDate(req.createdBefore))}`);
  if (req.orderNumberPrefix) where.push(`upper(order_number) like ${params.add(`${req.orderNumberPrefix.toUpperCase()}%`)}`);
  if (req.productId) where.push(`exists (select 1 from order_items i where i.order_id = orders.id and i.product_id = ${params.add(req.productId)})`);
  const filters = [...where];
  const filterValues = [...params.values];
  const cmp = dir === "asc" ? ">" : "<";
  if (page.after) where.push(`(${sort.column}, id) ${cmp} (${params.add(page.after.key[0])}::${sort.type}, ${params.add(page.after.key[1])}::uuid)`);
  const rows = await sqlOf(em).all<OrderRow>(
    `select * from orders where ${where.join(" and ")} order by ${sort.column} ${dir}, id ${dir} limit ${params.add(page.size + 1)}`,
    params.values,
  );
  const count = await sqlOf(em).one<{ n: string }>(`select count(*)::text as n from (select 1 from orders where ${filters.join(" and ")} limit 10001) c`, filterValues);
  const more = rows.length > page.size;
  const shown = rows.slice(0, page.size);
  const last = shown.at(-1) as (OrderRow & Record<string, string>) | undefined;
  const keyOf = (r: OrderRow & Record<string, string>) => String(r[sort.column]);
  return {
    orders: await ordersToMessages(em, shown, "list"),
    nextPageToken: more && last ? page.next({ key: [keyOf(last), last.id] }) : "",
    totalSize: Number(count?.n ?? 0),
  };
}

export async function statusHistory(em: EntityManager, orderId: string) {
  return { entries: (await loadOrder(em, orderId, "admin")).statusHistory };
}

export async function checkVerifiedPurchase(em: EntityManager, req: CheckVerifiedPurchaseRequest) {
  const params = new Params();
  const where = [`o.user_id = ${params.add(req.userId)}`, "o.status in ('partially_shipped', 'shipped', 'delivered')", `i.product_id = ${params.add(req.productId)}`];
  if (req.variantId) where.push(`i.variant_id = ${params.add(req.variantId)}`);
  const row = await sqlOf(em).one<{ id: string; created_at: string }>(
    `select o.id, o.created_at from orders o join order_items i on i.order_id = o.id where ${where.join(" and ")} order by o.created_at desc limit 1`,
    params.values,
  );
  return row ? { verified: true, orderId: row.id, purchasedAt: timestampOf(row.created_at) } : { verified: false, orderId: "" };
}

// ------------------------------------------------------------------ notes

export async function addOrderNote(em: EntityManager, adminId: string, req: AddOrderNoteRequest) {
  if (!(await orderRow(em, req.orderId))) throw notFound("order", req.orderId);
  const id = uuidv7();
  await em.transactional(async (tx) => {
    tx.create(OrderNoteEntity, { id, orderId: req.orderId, note: req.note, isInternal: req.visibility === OrderNoteVisibility.INTERNAL, authorType: "admin", createdBy: adminId });
    await sqlOf(tx).run("update orders set version = version + 1, updated_at = now() where id = $1", [req.orderId]);
  });
  const order = await loadOrder(em, req.orderId, "admin");
  return { note: order.notes.find((n) => n.id === id) };
}

export async function listOrderNotes(em: EntityManager, req: ListOrderNotesRequest) {
  if (!(await orderRow(em, req.orderId))) throw notFound("order", req.orderId);
  const page = pageOf(req, { key: ["timestamptz", "uuid"] } as const);
  const params = new Params();
  const where = [`order_id = ${params.add(req.orderId)}`];
  if (req.visibility !== OrderNoteVisibility.UNSPECIFIED) where.push(`is_internal = ${params.add(req.visibility === OrderNoteVisibility.INTERNAL)}`);
  if (page.after) where.push(`(created_at, id) > (${params.add(page.after.key[0])}::timestamptz, ${params.add(page.after.key[1])}::uuid)`);
  const rows = await sqlOf(em).all<{ id: string; order_id: string; note: string; is_internal: boolean; author_type: string; created_by: string; created_at: string }>(
    `select * from order_notes where ${where.join(" and ")} order by created_at, id limit ${params.add(page.size + 1)}`,
    params.values,
  );
  const shown = rows.slice(0, page.size);
  const last = shown.at(-1);
  return {
    notes: shown.map((n) => ({
      id: n.id,
      orderId: n.order_id,
      note: n.note,
      visibility: n.is_internal ? OrderNoteVisibility.INTERNAL : OrderNoteVisibility.CUSTOMER,
      authorType: actorTypes.fromDb(n.author_type),
      createdBy: n.created_by,
      createdAt: timestampOf(n.created_at),
    })),
    nextPageToken: rows.length > page.size && last ? page.next({ key: [String(last.created_at), last.id] }) : "",
  };
}

// ------------------------------------------------------------------ cancellation

/**
 * CancelOrder and AdminCancelOrder: before shipment. The peers first (each
 * idempotent per order, so a retry after a failure is safe): the payment
 * voided, or refunded in full when captured; the redemption released; an
 * uncommitted reservation released. Then one transaction: CANCELLED, history,
 * order.cancelled (Product puts committed stock back from it).
 */
export async function cancelOrder(em: EntityManager, peers: PeerClients, actor: Actor, orderId: string, reason: string, view: View, ownerId?: string): Promise<Order> {
  const row = await orderRow(em, orderId);
  if (!row || (ownerId !== undefined && (row.user_id !== ownerId || !row.announced))) throw notFound("order", orderId);
  if (row.status === "cancelled") return loadOrder(em, orderId, view, ownerId);
  if (!["pending", "confirmed", "processing"].includes(row.status) || (!row.announced && row.checkout === "running")) {
    throw failedPrecondition(`an order in status ${row.status} cannot be cancelled`, "ORDER_NOT_CANCELLABLE", { status: `ORDER_STATUS_${row.status.toUpperCase()}` });
  }
  const why = reason || (actor.type === OrderActorType.CUSTOMER ? "customer request" : "cancelled");
  let action = CancellationPaymentAction.NONE;
  let paymentStatus = row.payment_status;
  try {
    if (row.payment_id && ["pending", "authorized"].includes(row.payment_status)) {
      await peers.client(PaymentService).voidPayment({ paymentId: row.payment_id, reason: why.slice(0, 200) });
      action = CancellationPaymentAction.VOIDED;
      paymentStatus = "voided";
    } else if (row.payment_id && row.payment_status === "paid") {
      await peers.client(PaymentService).refundPayment({
        paymentId: row.payment_id,
        amount: money(BigInt(row.captured_minor) - BigInt(row.refunded_minor), row.currency!),
        reason: RefundReason.ORDER_CANCELLED,
        note: why.slice(0, 500),
        idempotencyKey: `order-${orderId}-refund-cancel`,
      });
      action = CancellationPaymentAction.REFUNDED;
    }
    if (BigInt(row.discount_minor) > 0n || (row.discounts ?? []).length > 0) {
      await peers.client(DiscountService).releaseRedemption({ orderId, reason: "order cancelled" });
    }
    if (!row.stock_committed) {
      await peers
        .client(InventoryService)
        .releaseReservation({ orderId, reason: "order cancelled" })
        .catch((error: unknown) => {
          if (ConnectError.from(error).code !== Code.NotFound) throw error;
        });
    }
  } catch (error) {
    const e = ConnectError.from(error);
    if (errorReason(e) === "PAYMENT_ALREADY_CAPTURED") throw domainError(Code.Aborted, "the payment was captured meanwhile; retry the cancellation", { reason: "CONCURRENT_MODIFICATION" });
    throw peerFailure(e.message.includes("discount") ? "discount" : e.message.includes("product") ? "product" : "payment", e);
  }
  await em.transactional(async (tx) => {
    const changed = await transition(tx, orderId, "cancelled", actor, why, {
      payment_status: paymentStatus,
      cancelled_at: new Date(),
      cancellation_reason: why.slice(0, 500),
      checkout: "done",
      lease_until: null,
    });
    if (!changed) return;
    const [order] = await ordersToMessages(tx, [changed], "internal");
    publishEvent(tx, OrderCancelledSchema, {
      orderId,
      orderNumber: changed.order_number,
      userId: changed.user_id,
      previousStatus: orderStatuses.fromDb((changed as OrderRow & { previous: string }).previous),
      cancelledBy: actor.type,
      reason: why,
      items: order!.items,
      stockCommitted: changed.stock_committed,
      paymentAction: action,
      paymentAmount: money(action === CancellationPaymentAction.NONE ? 0n : BigInt(changed.total_minor), changed.currency ?? "EUR"),
      releasedCouponCodes: order!.discounts.map((d) => d.couponCode).filter(Boolean),
    });
    await tx.flush();
  });
  return loadOrder(em, orderId, view, ownerId);
}

// ------------------------------------------------------------------ fulfilment

const settable = new Set([OrderStatus.PROCESSING, OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED, OrderStatus.DELIVERED]);

/** UpdateOrderStatus (admin) and the shipment events: PROCESSING, PARTIALLY_SHIPPED or SHIPPED (capture first, at the first parcel), DELIVERED. */
export async function moveFulfilment(
  em: EntityManager,
  peers: PeerClients,
  actor: Actor,
  orderId: string,
  to: OrderStatus,
  reason: string,
  extra: { expected?: OrderStatus; carrier?: string; trackingNumber?: string; trackingUrl?: string; shipmentId?: string; at?: Date; estimatedDelivery?: Date } = {},
): Promise<OrderRow> {
  if (!settable.has(to)) throw invalidArgument("status", "only PROCESSING, PARTIALLY_SHIPPED, SHIPPED and DELIVERED can be set by hand", "STATUS_NOT_SETTABLE");
  const row = await orderRow(em, orderId);
  if (!row || !row.announced) throw notFound("order", orderId);
  const target = orderStatuses.toDb(to);
  if (extra.expected && orderStatuses.toDb(extra.expected) !== row.status) {
    throw failedPrecondition(`the order is ${row.status}, not the expected status`, "STATUS_MISMATCH", { status: row.status });
  }
  if (row.status === target) return row;
  const from = { processing: ["confirmed"], partially_shipped: ["confirmed", "processing"], shipped: ["confirmed", "processing", "partially_shipped"], delivered: ["shipped"] }[
    target as "processing"
  ]!;
  // The first parcel ships the order (its capture, its order.shipped); the parcel that completes it only moves it on.
  const firstParcel = (target === "shipped" || target === "partially_shipped") && row.status !== "partially_shipped";
  if (!from.includes(row.status)) {
    throw failedPrecondition(`an order in status ${row.status} cannot become ${target}`, "INVALID_STATUS_TRANSITION", { from: row.status, to: target });
  }
  // Shipped: the authorization is captured first (ORDER_CAPTURE=shipment).
  let set: Record<string, unknown> = {};
  if (firstParcel && row.payment_id && row.payment_status === "authorized") {
    const paymentId = await captureOrReauthorize(em, peers, row);
    set = { payment_status: "paid", captured_minor: row.total_minor, payment_id: paymentId };
  }
  const at = extra.at ?? new Date();
  if (target === "shipped" || target === "partially_shipped") {
    set = {
      ...set,
      ...(firstParcel ? { shipped_at: at } : {}),
      carrier: extra.carrier || row.carrier,
      tracking_number: extra.trackingNumber || row.tracking_number,
      tracking_url: extra.trackingUrl || row.tracking_url,
      shipment_id: extra.shipmentId || row.shipment_id,
      ...(extra.estimatedDelivery ? { estimated_delivery_date: extra.estimatedDelivery } : {}),
    };
  }
  if (target === "delivered") set = { delivered_at: at };
  return em.transactional(async (tx) => {
    const changed = await transition(tx, orderId, target, actor, reason, set, from);
    if (!changed) throw domainError(Code.Aborted, "the order changed meanwhile; retry", { reason: "CONCURRENT_MODIFICATION" });
    const [order] = await ordersToMessages(tx, [changed], "internal");
    if (firstParcel) {
      publishEvent(tx, OrderShippedSchema, {
        orderId,
        orderNumber: order!.orderNumber,
        userId: order!.userId,
        shipmentId: order!.shipmentId,
        carrier: order!.carrier,
        trackingNumber: order!.trackingNumber,
        trackingUrl: order!.trackingUrl,
        estimatedDeliveryDate: order!.estimatedDeliveryDate,
        shippingAddress: order!.shippingAddress,
        items: order!.items,
      });
    }
    if (target === "delivered") {
      publishEvent(tx, OrderDeliveredSchema, { orderId, orderNumber: order!.orderNumber, userId: order!.userId, shipmentId: order!.shipmentId, items: order!.items });
    }
    await tx.flush();
    return changed;
  });
}

/**
 * Captures the order's authorization when it ships. An authorization that
 * expired meanwhile (Payment: AUTHORIZATION_EXPIRED) is renewed when the order
 * was paid with a saved method (a new AuthorizePayment, key
 * "order-<id>-reauthorize", then captured); a one-time token cannot be
 * charged again, so the order is not shipped: FAILED_PRECONDITION
 * PAYMENT_AUTHORIZATION_EXPIRED and an internal note for the back office.
 */
/** A shipment that cannot be paid: an internal note for the back office, and the error. */
async function refused(em: EntityManager, row: OrderRow, why: string, reason: string): Promise<ConnectError> {
  await sqlOf(em).run("insert into order_notes (id, order_id, note, is_internal, author_type, created_by) values ($1, $2, $3, true, 'system', 'system')", [
    uuidv7(),
    row.id,
    `${why}. The shipment was not applied: collect the payment or cancel the order.`,
  ]);
  return failedPrecondition(`order ${row.order_number}: ${why}`, reason);
}

async function captureOrReauthorize(em: EntityManager, peers: PeerClients, row: OrderRow): Promise<string> {
  const payments = peers.client(PaymentService);
  try {
    await payments.capturePayment({ paymentId: row.payment_id! });
    return row.payment_id!;
  } catch (error) {
    const e = ConnectError.from(error);
    if (e.code === Code.FailedPrecondition && errorReason(e) !== "AUTHORIZATION_EXPIRED") {
      throw await refused(em, row, `the capture was refused (${errorReason(e) ?? e.rawMessage})`, "PAYMENT_CAPTURE_FAILED");
    }
    if (errorReason(e) !== "AUTHORIZATION_EXPIRED") throw peerFailure("payment", e);
  }
  const expired = (why: string) => refused(em, row, `the payment authorization expired before the order shipped; ${why}`, "PAYMENT_AUTHORIZATION_EXPIRED");
  const methodId = row.payment_source?.paymentMethodId;
  if (!methodId) throw await expired("it was paid with a one-time token, which cannot be charged again");
  try {
    const { payment } = await payments.authorizePayment({
      orderId: row.id,
      orderNumber: row.order_number,
      userId: row.user_id,
      amount: money(BigInt(row.total_minor), row.currency!),
      source: { case: "paymentMethodId", value: methodId },
      description: `Order ${row.order_number} (renewed authorization)`,
      idempotencyKey: `order-${row.id}-reauthorize`,
    });
    if (payment!.status !== PaymentStatus.AUTHORIZED) throw await expired(`the renewed authorization was not granted (${payment!.failureCode || "pending"})`);
    await payments.capturePayment({ paymentId: payment!.id });
    return payment!.id;
  } catch (error) {
    if (errorReason(error) === "PAYMENT_AUTHORIZATION_EXPIRED") throw error;
    throw peerFailure("payment", error);
  }
}

export async function updateOrderStatus(em: EntityManager, peers: PeerClients, adminId: string, req: UpdateOrderStatusRequest) {
  await moveFulfilment(em, peers, { type: OrderActorType.ADMIN, id: adminId }, req.orderId, req.status, req.reason, {
    expected: req.expectedStatus || undefined,
    carrier: req.carrier,
    trackingNumber: req.trackingNumber,
    at: req.occurredAt ? timestampDate(req.occurredAt) : undefined,
  });
  return { order: await loadOrder(em, req.orderId, "admin") };
}

// ------------------------------------------------------------------ payment updates

const fromOrderPayment = (s: OrderPaymentStatus) => paymentStatuses.toDb(s);

/**
 * ApplyPaymentUpdate and the payment.* events: payment status and amounts,
 * ordered by occurred_at (an older update changes nothing). A checkout still
 * waiting for its payment is left to the saga (recovery.ts asks Payment);
 * REFUNDED moves a shipped or delivered order to REFUNDED.
 */
export async function applyPaymentUpdate(em: EntityManager, req: ApplyPaymentUpdateRequest) {
  return em.transactional(async (tx) => {
    const row = await orderRow(tx, req.orderId, true);
    if (!row) throw notFound("order", req.orderId);
    if (row.payment_id && row.payment_id !== req.paymentId) throw failedPrecondition("the payment does not belong to this order", "PAYMENT_MISMATCH");
    const at = req.occurredAt ? timestampDate(req.occurredAt) : new Date();
    const answer = (applied: boolean, r: OrderRow) => ({ applied, status: orderStatuses.fromDb(r.status), paymentStatus: paymentStatuses.fromDb(r.payment_status) });
    if (row.checkout === "running") {
      // The checkout waits for this payment: wake it, the recovery job drives it on from Payment's state.
      await sqlOf(tx).run("update orders set lease_until = now() where id = $1", [row.id]);
      return answer(false, row);
    }
    if (row.last_payment_update_at && new Date(row.last_payment_update_at) >= at) return answer(false, row);
    const status = fromOrderPayment(req.paymentStatus);
    const db = sqlOf(tx);
    await db.run(
      "update orders set payment_status = $2, refunded_minor = $3, captured_minor = greatest(captured_minor, $4), last_payment_update_at = $5, version = version + 1, updated_at = now() where id = $1",
      [row.id, status === "authorized" && row.payment_status === "paid" ? "paid" : status, req.amountRefunded?.amountMinor ?? 0n, req.amountCaptured?.amountMinor ?? 0n, at],
    );
    if (status === "refunded" && ["partially_shipped", "shipped", "delivered"].includes(row.status)) {
      await transition(tx, row.id, "refunded", system, "payment refunded in full");
    }
    return answer(true, (await orderRow(tx, row.id))!);
  });
}

// ------------------------------------------------------------------ corrections

/** UpdateOrder: addresses before shipping, metadata (replaced whole), the estimated delivery date. */
export async function updateOrder(em: EntityManager, req: UpdateOrderRequest) {
  const input = req.order!;
  const paths = req.updateMask!.paths;
  await em.transactional(async (tx) => {
    const row = await orderRow(tx, input.id, true);
    if (!row) throw notFound("order", input.id);
    const params = new Params();
    const set: string[] = [];
    for (const path of paths) {
      if (path === "shipping_address" || path === "billing_address") {
        if (["partially_shipped", "shipped", "delivered", "refunded"].includes(row.status)) throw failedPrecondition("the order has shipped: its addresses can no longer change", "ORDER_ALREADY_SHIPPED");
        const value = path === "shipping_address" ? input.shippingAddress : input.billingAddress;
        if (path === "shipping_address" && !value) throw invalidArgument("order.shipping_address", "an order always has a shipping address", "FIELD_REQUIRED");
        set.push(`${path} = ${params.add(JSON.stringify(addressJson(value)))}::jsonb`);
      } else if (path === "metadata") {
        set.push(`metadata = ${params.add(JSON.stringify(input.metadata))}::jsonb`);
      } else if (path === "estimated_delivery_date") {
        set.push(`estimated_delivery_date = ${params.add(input.estimatedDeliveryDate ? timestampDate(input.estimatedDeliveryDate) : null)}`);
      } else {
        throw invalidArgument(path, `${path} cannot be updated`, "FIELD_NOT_UPDATABLE");
      }
    }
    await sqlOf(tx).run(`update orders set ${set.join(", ")}, version = version + 1, updated_at = now() where id = ${params.add(row.id)}`, params.values);
  });
  return { order: await loadOrder(em, input.id, "admin") };
}

export const me = (u: { userId: string }) => u.userId;
export const customerActor = (userId: string): Actor => ({ type: OrderActorType.CUSTOMER, id: userId });
export const adminActor = (userId: string): Actor => ({ type: OrderActorType.ADMIN, id: userId });
