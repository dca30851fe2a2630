/**
 * MikroORM entities of the Order service (tables in migrations/0001_order_tables.ts).
 * Rows are inserted through these; status moves and saga progress are
 * conditional UPDATEs through sqlOf (checkout.ts, orders.ts). Optional text is
 * null in the database and "" in the contract. Snapshots (addresses, shipping
 * method, discount lines, payment method display) are the contract messages'
 * JSON.
 */
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const OrderEntity = defineEntity({
  name: "Order",
  tableName: "orders",
  properties: {
    id: p.uuid().primary(),
    orderNumber: p.text(),
    userId: p.uuid(),
    cartId: p.uuid(),
    status: p.text(),
    paymentStatus: p.text(),
    checkout: p.text(),
    announced: p.boolean().default(false),
    idempotencyKey: p.text(),
    requestHash: p.text(),
    currency: p.string().columnType("char(3)").nullable(),
    subtotalMinor: p.bigint("bigint").default("0"),
    discountMinor: p.bigint("bigint").default("0"),
    shippingMinor: p.bigint("bigint").default("0"),
    taxMinor: p.bigint("bigint").default("0"),
    totalMinor: p.bigint("bigint").default("0"),
    capturedMinor: p.bigint("bigint").default("0"),
    refundedMinor: p.bigint("bigint").default("0"),
    discounts: p.json<unknown[]>(),
    shippingAddress: p.json<unknown>().nullable(),
    billingAddress: p.json<unknown>().nullable(),
    shippingMethod: p.json<unknown>().nullable(),
    paymentSource: p.json<unknown>().nullable(),
    paymentId: p.uuid().nullable(),
    paymentMethod: p.json<unknown>().nullable(),
    shipmentId: p.uuid().nullable(),
    carrier: p.text().nullable(),
    trackingNumber: p.text().nullable(),
    trackingUrl: p.text().nullable(),
    estimatedDeliveryDate: p.datetime().nullable(),
    shippedAt: p.datetime().nullable(),
    deliveredAt: p.datetime().nullable(),
    cancelledAt: p.datetime().nullable(),
    cancellationReason: p.text().nullable(),
    metadata: p.json<Record<string, string>>(),
    failure: p.json<unknown>().nullable(),
    stockCommitted: p.boolean().default(false),
    version: p.integer().default(1),
    leaseUntil: p.datetime().nullable(),
    lastPaymentUpdateAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

export const OrderItemEntity = defineEntity({
  name: "OrderItem",
  tableName: "order_items",
  properties: {
    id: p.uuid().primary(),
    orderId: p.uuid(),
    position: p.integer(),
    cartItemId: p.text(),
    productId: p.uuid(),
    variantId: p.uuid().nullable(),
    productName: p.text(),
    variantName: p.text().nullable(),
    productSku: p.text(),
    productImageUrl: p.text().nullable(),
    unitPriceMinor: p.bigint("bigint"),
    quantity: p.integer(),
    totalMinor: p.bigint("bigint"),
    discountMinor: p.bigint("bigint").default("0"),
    taxMinor: p.bigint("bigint").default("0"),
    createdAt: p.datetime().onCreate(now),
  },
});

export const OrderStatusHistoryEntity = defineEntity({
  name: "OrderStatusHistory",
  tableName: "order_status_history",
  properties: {
    id: p.uuid().primary(),
    orderId: p.uuid(),
    status: p.text(),
    previousStatus: p.text().nullable(),
    actorType: p.text(),
    changedBy: p.text(),
    reason: p.text(),
    /** The order's version this change produced (WatchOrder resumes from it); null on rows older than migration 0003. */
    orderVersion: p.integer().nullable(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const OrderNoteEntity = defineEntity({
  name: "OrderNote",
  tableName: "order_notes",
  properties: {
    id: p.uuid().primary(),
    orderId: p.uuid(),
    note: p.text(),
    isInternal: p.boolean(),
    authorType: p.text(),
    createdBy: p.text(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const CheckoutStepEntity = defineEntity({
  name: "CheckoutStep",
  tableName: "order_checkout_steps",
  properties: {
    orderId: p.uuid().primary(),
    step: p.text().primary(),
    state: p.text(),
    detail: p.json<Record<string, unknown>>(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

/** A parcel of the order (migrations/0002_order_shipments.ts). */
export const OrderShipmentEntity = defineEntity({
  name: "OrderShipment",
  tableName: "order_shipments",
  properties: {
    shipmentId: p.uuid().primary(),
    orderId: p.uuid(),
    items: p.json<{ order_item_id: string; quantity: number }[]>(),
    createdAt: p.datetime().onCreate(now),
    deliveredAt: p.datetime().nullable(),
  },
});

export const orderEntities = [OrderEntity, OrderItemEntity, OrderStatusHistoryEntity, OrderNoteEntity, CheckoutStepEntity, OrderShipmentEntity];
