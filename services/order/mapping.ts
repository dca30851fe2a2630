/**
 * Rows to contract messages, and the database values of the order enums.
 * Views: "customer" (customer notes only, admin ids hidden), "admin" (every
 * note), "internal" (no notes), "list" (items only).
 */
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type PostalAddress, PostalAddressSchema } from "../../gen/ecommerce/common/v1/address_pb.js";
import {
  type Order,
  OrderActorType,
  OrderDiscountSchema,
  OrderNoteVisibility,
  OrderPaymentMethodSummarySchema,
  OrderPaymentStatus,
  OrderSchema,
  OrderShippingMethodSchema,
  OrderStatus,
} from "../../gen/ecommerce/order/v1/order_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { dbEnum } from "../../kit/enums.ts";
import { notFound } from "../../kit/errors.ts";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";

export const orderStatuses = dbEnum<OrderStatus>([
  [OrderStatus.PENDING, "pending"],
  [OrderStatus.CONFIRMED, "confirmed"],
  [OrderStatus.PROCESSING, "processing"],
  [OrderStatus.SHIPPED, "shipped"],
  [OrderStatus.PARTIALLY_SHIPPED, "partially_shipped"],
  [OrderStatus.DELIVERED, "delivered"],
  [OrderStatus.CANCELLED, "cancelled"],
  [OrderStatus.REFUNDED, "refunded"],
  [OrderStatus.PAYMENT_FAILED, "payment_failed"],
]);

export const paymentStatuses = dbEnum<OrderPaymentStatus>([
  [OrderPaymentStatus.PENDING, "pending"],
  [OrderPaymentStatus.AUTHORIZED, "authorized"],
  [OrderPaymentStatus.PAID, "paid"],
  [OrderPaymentStatus.FAILED, "failed"],
  [OrderPaymentStatus.VOIDED, "voided"],
  [OrderPaymentStatus.PARTIALLY_REFUNDED, "partially_refunded"],
  [OrderPaymentStatus.REFUNDED, "refunded"],
]);

export const actorTypes = dbEnum<OrderActorType>([
  [OrderActorType.CUSTOMER, "customer"],
  [OrderActorType.ADMIN, "admin"],
  [OrderActorType.SYSTEM, "system"],
]);

export const terminalStatuses = ["delivered", "cancelled", "refunded", "payment_failed"];

export type View = "customer" | "admin" | "internal" | "list";

export interface OrderRow {
  id: string;
  order_number: string;
  user_id: string;
  cart_id: string;
  status: string;
  payment_status: string;
  checkout: string;
  announced: boolean;
  currency: string | null;
  subtotal_minor: string;
  discount_minor: string;
  shipping_minor: string;
  tax_minor: string;
  total_minor: string;
  captured_minor: string;
  refunded_minor: string;
  discounts: unknown[];
  shipping_address: unknown;
  billing_address: unknown;
  shipping_method: unknown;
  payment_source: { paymentMethodId?: string; provider?: string } | null;
  payment_id: string | null;
  payment_method: unknown;
  shipment_id: string | null;
  carrier: string | null;
  tracking_number: string | null;
  tracking_url: string | null;
  estimated_delivery_date: string | null;
  shipped_at: string | null;
  delivered_at: string | null;
  cancelled_at: string | null;
  cancellation_reason: string | null;
  metadata: Record<string, string>;
  failure: { code: number; reason: string; message: string; metadata: Record<string, string> } | null;
  stock_committed: boolean;
  version: number;
  idempotency_key: string;
  request_hash: string;
  lease_until: string | null;
  last_payment_update_at: string | null;
  created_at: string;
  updated_at: string;
}

interface ItemRow {
  id: string;
  order_id: string;
  product_id: string;
  variant_id: string | null;
  product_name: string;
  variant_name: string | null;
  product_sku: string;
  product_image_url: string | null;
  unit_price_minor: string;
  quantity: number;
  total_minor: string;
  discount_minor: string;
  tax_minor: string;
  created_at: string;
}

export const addressJson = (a: PostalAddress | undefined) => (a ? (toJson(PostalAddressSchema, a) as object) : null);
const addressOf = (j: unknown) => (j ? fromJson(PostalAddressSchema, j as JsonValue) : undefined);

export async function orderRow(em: EntityManager, orderId: string, lock = false): Promise<OrderRow | undefined> {
  return sqlOf(em).one<OrderRow>(`select * from orders where id = $1${lock ? " for update" : ""}`, [orderId]);
}

/** Whether a customer may see the order: announced, or kept as a record (PAYMENT_FAILED, or cancelled after its authorization). */
export const customerVisible = (r: OrderRow) => r.announced || r.status === "payment_failed" || (r.status === "cancelled" && r.payment_id !== null);

export async function ordersToMessages(em: EntityManager, rows: OrderRow[], view: View): Promise<Order[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((r) => r.id);
  const db = sqlOf(em);
  const items = await db.all<ItemRow>("select * from order_items where order_id = any($1::uuid[]) order by order_id, position", [ids]);
  const history =
    view === "list"
      ? []
      : await db.all<{ id: string; order_id: string; status: string; previous_status: string | null; actor_type: string; changed_by: string; reason: string; created_at: string }>(
          "select * from order_status_history where order_id = any($1::uuid[]) order by created_at, id",
          [ids],
        );
  const notes =
    view === "customer" || view === "admin"
      ? await db.all<{ id: string; order_id: string; note: string; is_internal: boolean; author_type: string; created_by: string; created_at: string }>(
          `select * from order_notes where order_id = any($1::uuid[])${view === "customer" ? " and not is_internal" : ""} order by created_at, id`,
          [ids],
        )
      : [];
  return rows.map((r) => {
    const cur = r.currency ?? "";
    const m = (v: string) => money(v, cur);
    return create(OrderSchema, {
      id: r.id,
      orderNumber: r.order_number,
      userId: r.user_id,
      status: orderStatuses.fromDb(r.status),
      paymentStatus: paymentStatuses.fromDb(r.payment_status),
      items: items
        .filter((i) => i.order_id === r.id)
        .map((i) => ({
          id: i.id,
          productId: i.product_id,
          variantId: i.variant_id ?? "",
          productName: i.product_name,
          variantName: i.variant_name ?? "",
          productSku: i.product_sku,
          productImageUrl: i.product_image_url ?? "",
          unitPrice: m(i.unit_price_minor),
          quantity: i.quantity,
          totalPrice: m(i.total_minor),
          discountAmount: m(i.discount_minor),
          taxAmount: m(i.tax_minor),
          createdAt: timestampOf(i.created_at),
        })),
      subtotal: m(r.subtotal_minor),
      discountAmount: m(r.discount_minor),
      shippingAmount: m(r.shipping_minor),
      taxAmount: m(r.tax_minor),
      totalAmount: m(r.total_minor),
      amountRefunded: m(r.refunded_minor),
      currencyCode: cur,
      discounts: (r.discounts ?? []).map((d) => fromJson(OrderDiscountSchema, d as JsonValue)),
      shippingAddress: addressOf(r.shipping_address),
      billingAddress: addressOf(r.billing_address),
      shippingMethod: r.shipping_method ? fromJson(OrderShippingMethodSchema, r.shipping_method as JsonValue) : undefined,
      paymentId: r.payment_id ?? "",
      paymentMethod: r.payment_method ? fromJson(OrderPaymentMethodSummarySchema, r.payment_method as JsonValue) : undefined,
      shipmentId: r.shipment_id ?? "",
      carrier: r.carrier ?? "",
      trackingNumber: r.tracking_number ?? "",
      trackingUrl: r.tracking_url ?? "",
      estimatedDeliveryDate: timestampOf(r.estimated_delivery_date),
      shippedAt: timestampOf(r.shipped_at),
      deliveredAt: timestampOf(r.delivered_at),
      cancelledAt: timestampOf(r.cancelled_at),
      cancellationReason: r.cancellation_reason ?? "",
      metadata: r.metadata ?? {},
      statusHistory: history
        .filter((h) => h.order_id === r.id)
        .map((h) => ({
          id: h.id,
          status: orderStatuses.fromDb(h.status),
          previousStatus: orderStatuses.fromDbOrUnspecified(h.previous_status),
          actorType: actorTypes.fromDb(h.actor_type),
          changedBy: view === "customer" && h.actor_type === "admin" ? "" : h.changed_by,
          reason: h.reason,
          createdAt: timestampOf(h.created_at),
        })),
      notes: notes
        .filter((n) => n.order_id === r.id)
        .map((n) => ({
          id: n.id,
          orderId: n.order_id,
          note: n.note,
          visibility: n.is_internal ? OrderNoteVisibility.INTERNAL : OrderNoteVisibility.CUSTOMER,
          authorType: actorTypes.fromDb(n.author_type),
          createdBy: view === "customer" && n.author_type === "admin" ? "" : n.created_by,
          createdAt: timestampOf(n.created_at),
        })),
      createdAt: timestampOf(r.created_at),
      updatedAt: timestampOf(r.updated_at),
    });
  });
}

/** One order in a view; NOT_FOUND when missing, not the caller's (`userId`), or hidden from customers. */
export async function loadOrder(em: EntityManager, orderId: string, view: View, userId?: string): Promise<Order> {
  const row = await orderRow(em, orderId);
  if (!row || (userId !== undefined && (row.user_id !== userId || !customerVisible(row)))) throw notFound("order", orderId);
  return (await ordersToMessages(em, [row], view))[0]!;
}

export const paymentMethodSummaryJson = (m: { type?: string; brand?: string; last4?: string } | undefined) =>
  m ? (toJson(OrderPaymentMethodSummarySchema, create(OrderPaymentMethodSummarySchema, m)) as object) : null;
