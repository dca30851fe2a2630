/**
 * The flows of Order's, Payment's and Shipping's events (contracts in
 * proto/ecommerce/{order,payment,shipping}/v1/events.proto), as the
 * notification contract names them: order.created -> order_confirmation;
 * shipment.created -> order_shipped (one per parcel; order.shipped sends
 * nothing); order.delivered -> order_delivered; order.cancelled ->
 * order_cancelled; payment.succeeded -> payment_receipt; payment.failed ->
 * payment_failed; payment.refunded -> refund_issued (not for a return's
 * refund, which return.refunded announces); shipment.status_changed to
 * EXCEPTION -> shipment_exception; return.requested, .approved, .rejected,
 * .received, .refunded, .cancelled -> return_requested ... return_cancelled;
 * cart.abandoned -> abandoned_cart (MARKETING: only to users who opted in).
 *
 * Shipment events carry no order number. It is learnt from order.created
 * (notification_orders); when that has not been seen (another stream, so no
 * order between them), the Order service is asked (GetOrderInternal) with a
 * deadline of PEER_LOOKUP_TIMEOUT_MS. A failed lookup fails the handler: the
 * kit retries it and, after EVENT_MAX_DELIVERIES, keeps it as a dead letter.
 */
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import { NotificationType } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import {
  OrderCancelledSchema,
  OrderCreatedSchema,
  OrderDeliveredSchema,
} from "../../gen/ecommerce/order/v1/events_pb.js";
import { OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { PaymentFailedSchema, PaymentRefundedSchema, PaymentSucceededSchema } from "../../gen/ecommerce/payment/v1/events_pb.js";
import { ShipmentCreatedSchema, ShipmentStatusChangedSchema } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import { ShipmentStatus } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { CartAbandonedSchema } from "../../gen/ecommerce/cart/v1/events_pb.js";
import {
  ReturnApprovedSchema,
  ReturnCancelledSchema,
  ReturnReceivedSchema,
  ReturnRefundedSchema,
  ReturnRejectedSchema,
  ReturnRequestedSchema,
} from "../../gen/ecommerce/returns/v1/events_pb.js";
import type { PeerClients } from "../../kit/clients.ts";
import type { EntityManager } from "../../kit/db.ts";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { sqlOf } from "../../kit/sql.ts";
import { type FlowDeps, runFlow } from "./consumers.ts";

/** "€1,234.50" from minor units, exactly (the decimal string is built from the bigint, never a float). */
export function formatMoney(m: Money | undefined, locale = "en"): string {
  if (!m || !m.currencyCode) return "";
  let digits = 2;
  try {
    digits = new Intl.NumberFormat("en", { style: "currency", currency: m.currencyCode }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    return `${m.amountMinor} ${m.currencyCode}`;
  }
  const negative = m.amountMinor < 0n;
  const abs = (negative ? -m.amountMinor : m.amountMinor).toString().padStart(digits + 1, "0");
  const decimal = digits === 0 ? abs : `${abs.slice(0, -digits)}.${abs.slice(-digits)}`;
  const format = new Intl.NumberFormat(locale || "en", { style: "currency", currency: m.currencyCode }).format as (v: string) => string;
  return format(`${negative ? "-" : ""}${decimal}`);
}

const nonZero = (m: Money | undefined) => (m && m.amountMinor !== 0n ? m : undefined);

async function localeOf(em: EntityManager, userId: string): Promise<string> {
  return (await sqlOf(em).one<{ locale: string | null }>("select locale from notification_recipients where user_id = $1", [userId]))?.locale ?? "en";
}

async function rememberOrder(em: EntityManager, orderId: string, orderNumber: string, userId: string): Promise<void> {
  if (!orderNumber) return;
  await sqlOf(em).run("insert into notification_orders (order_id, order_number, user_id) values ($1, $2, $3) on conflict (order_id) do nothing", [orderId, orderNumber, userId]);
}

/** The order number of an order: known from order.created, else asked of the Order service (with a deadline). */
export async function orderNumberOf(em: EntityManager, peers: PeerClients, timeoutMs: number, orderId: string): Promise<string> {
  const known = await sqlOf(em).one<{ order_number: string }>("select order_number from notification_orders where order_id = $1", [orderId]);
  if (known) return known.order_number;
  const { order } = await peers.client(OrderService).getOrderInternal({ orderId }, { timeoutMs });
  if (!order) throw new Error(`Order answered no order for ${orderId}`);
  await rememberOrder(em, orderId, order.orderNumber, order.userId);
  return order.orderNumber;
}

export function commerceConsumers(deps: FlowDeps, peers: PeerClients): EventHandler[] {
  const orderUrl = (orderId: string) => `${deps.config.storefrontUrl}/orders/${orderId}`;
  const metadata = (orderId: string, extra: Record<string, string> = {}) => ({ order_id: orderId, ...extra });
  return [
    onEvent(OrderCreatedSchema, "order-confirmation", async (em, e) => {
      await rememberOrder(em, e.orderId, e.orderNumber, e.userId);
      const locale = await localeOf(em, e.userId);
      const fmt = (m: Money | undefined) => formatMoney(m, locale);
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "order_confirmation",
        type: NotificationType.ORDER_UPDATES,
        vars: {
          order_number: e.orderNumber,
          order_url: orderUrl(e.orderId),
          items: e.items.map((i) => ({ name: i.variantName ? `${i.productName} (${i.variantName})` : i.productName, quantity: i.quantity, total: fmt(i.totalPrice) })),
          subtotal: fmt(e.subtotal),
          discount: nonZero(e.discountAmount) ? fmt(e.discountAmount) : "",
          shipping: fmt(e.shippingAmount),
          tax: fmt(e.taxAmount),
          total: fmt(e.totalAmount),
        },
        metadata: metadata(e.orderId),
      });
    }),

    onEvent(OrderDeliveredSchema, "order-delivered", async (em, e) => {
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "order_delivered",
        type: NotificationType.ORDER_UPDATES,
        vars: { order_number: e.orderNumber, order_url: orderUrl(e.orderId) },
        metadata: metadata(e.orderId),
      });
    }),

    onEvent(OrderCancelledSchema, "order-cancelled", async (em, e) => {
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "order_cancelled",
        type: NotificationType.ORDER_UPDATES,
        vars: { order_number: e.orderNumber, reason: e.reason },
        metadata: metadata(e.orderId),
      });
    }),

    onEvent(PaymentSucceededSchema, "payment-receipt", async (em, e) => {
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "payment_receipt",
        type: NotificationType.PAYMENT_RECEIPTS,
        vars: { order_number: e.orderNumber, amount: formatMoney(e.amountCaptured, await localeOf(em, e.userId)) },
        metadata: metadata(e.orderId, { payment_id: e.paymentId }),
      });
    }),

    onEvent(PaymentFailedSchema, "payment-failed", async (em, e) => {
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "payment_failed",
        type: NotificationType.PAYMENT_RECEIPTS,
        vars: { order_number: e.orderNumber, amount: formatMoney(e.amount, await localeOf(em, e.userId)), reason: e.failureMessage },
        metadata: metadata(e.orderId, { payment_id: e.paymentId }),
      });
    }),

    onEvent(PaymentRefundedSchema, "refund-issued", async (em, e) => {
      if (e.returnRequestId) return; // return.refunded announces it
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "refund_issued",
        type: NotificationType.PAYMENT_RECEIPTS,
        vars: { order_number: e.orderNumber, amount: formatMoney(e.amount, await localeOf(em, e.userId)), full: e.fullyRefunded },
        metadata: metadata(e.orderId, { payment_id: e.paymentId, refund_id: e.refundId }),
      });
    }),

    onEvent(ShipmentCreatedSchema, "order-shipped", async (em, e) => {
      const orderNumber = await orderNumberOf(em, peers, deps.config.peerTimeoutMs, e.orderId);
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "order_shipped",
        type: NotificationType.SHIPPING_UPDATES,
        vars: { order_number: orderNumber, carrier: e.carrierName || e.carrierCode, tracking_number: e.trackingNumber, tracking_url: e.trackingUrl },
        metadata: metadata(e.orderId, { shipment_id: e.shipmentId }),
      });
    }),

    onEvent(ShipmentStatusChangedSchema, "shipment-exception", async (em, e) => {
      if (e.toStatus !== ShipmentStatus.EXCEPTION) return;
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "shipment_exception",
        type: NotificationType.SHIPPING_UPDATES,
        vars: { tracking_number: e.trackingNumber, description: e.description || "the carrier reported a problem" },
        metadata: metadata(e.orderId, { shipment_id: e.shipmentId }),
      });
    }),
  
    ...returnFlows(deps),

    onEvent(CartAbandonedSchema, "abandoned-cart", async (em, e) => {
      if (!e.userId) return; // a guest's cart: no address
      const locale = await localeOf(em, e.userId);
      const loc = (m: Money | undefined) => formatMoney(m, locale);
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        templateName: "abandoned_cart",
        type: NotificationType.MARKETING,
        vars: {
          items: e.items.map((i) => ({ name: i.variantName ? `${i.productName} (${i.variantName})` : i.productName, quantity: i.quantity, total: loc(i.lineTotal) })),
          total: loc(e.total),
          cart_url: `${deps.config.storefrontUrl}/cart`,
        },
        metadata: { cart_id: e.cartId },
      });
    }),
  ];
}

function returnFlows(deps: FlowDeps): EventHandler[] {
  type ReturnBase = { eventId: string; returnId: string; rmaNumber: string; orderId: string; userId: string };
  const flow = (em: EntityManager, e: ReturnBase, templateName: string, vars: Record<string, unknown> = {}) =>
    runFlow(em, deps, {
      key: e.eventId,
      userId: e.userId,
      templateName,
      type: NotificationType.RETURNS,
      vars: { rma_number: e.rmaNumber, ...vars },
      metadata: { order_id: e.orderId, return_id: e.returnId },
    });
  return [
    onEvent(ReturnRequestedSchema, "return-requested", (em, e) => flow(em, e, "return_requested")),
    onEvent(ReturnApprovedSchema, "return-approved", async (em, e) =>
      flow(em, e, "return_approved", { refund: formatMoney(e.totalRefundAmount, await localeOf(em, e.userId)) }),
    ),
    onEvent(ReturnRejectedSchema, "return-rejected", (em, e) => flow(em, e, "return_rejected", { reason: e.reason })),
    onEvent(ReturnReceivedSchema, "return-received", (em, e) => flow(em, e, "return_received")),
    onEvent(ReturnRefundedSchema, "return-refunded", async (em, e) => flow(em, e, "return_refunded", { amount: formatMoney(e.amount, await localeOf(em, e.userId)) })),
    onEvent(ReturnCancelledSchema, "return-cancelled", (em, e) => flow(em, e, "return_cancelled")),
  ];
}
