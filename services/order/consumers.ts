/**
 * Events the order follows, each in the kit's inbox transaction:
 * - shipment.created: the parcel is recorded (order_shipments, with its lines);
 *   the first parcel ships the order (the authorization is captured first, in
 *   full, then SHIPPED and order.shipped). shipment.delivered: the parcel is
 *   delivered; the order becomes DELIVERED (order.delivered) once every unit
 *   of every line has been shipped and every parcel delivered, so an order in
 *   several parcels is PARTIALLY_SHIPPED until its last units ship, then
 *   SHIPPED until its last parcel arrives. A shipment of an order that cannot move (cancelled,
 *   already further) changes nothing; one of an unknown order fails and is
 *   retried, then kept as a dead letter.
 * - payment.succeeded / voided / refunded: the payment status and amounts
 *   (as ApplyPaymentUpdate). payment.authorized / payment.failed of a checkout
 *   still waiting for an asynchronous payment: its lease is expired so the
 *   recovery job finishes it at its next pass.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ApplyPaymentUpdateRequestSchema, OrderActorType, OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { PaymentAuthorizedSchema, PaymentFailedSchema, PaymentRefundedSchema, PaymentSucceededSchema, PaymentVoidedSchema } from "../../gen/ecommerce/payment/v1/events_pb.js";
import { ShipmentCreatedSchema, ShipmentDeliveredSchema } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import type { PeerClients } from "../../kit/clients.ts";
import type { EntityManager } from "../../kit/db.ts";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import { orderRow } from "./mapping.ts";
import { applyPaymentUpdate, moveFulfilment } from "./orders.ts";
import { systemActor } from "./state.ts";

const system = systemActor(OrderActorType.SYSTEM);

/** A move the order's state refuses (cancelled, already further) is ignored; anything else is retried. */
async function tolerant(work: () => Promise<unknown>): Promise<void> {
  try {
    await work();
  } catch (error) {
    const e = ConnectError.from(error);
    if (e.code === Code.FailedPrecondition) return;
    throw e;
  }
}

async function wakeCheckout(em: EntityManager, orderId: string): Promise<void> {
  await sqlOf(em).run("update orders set lease_until = now() where id = $1 and checkout = 'running'", [orderId]);
}

async function paymentUpdate(em: EntityManager, orderId: string, paymentId: string, status: OrderPaymentStatus, at: Date, refunded?: bigint) {
  const row = await orderRow(em, orderId);
  if (!row || row.payment_id !== paymentId || row.checkout === "running") return;
  await tolerant(() =>
    applyPaymentUpdate(
      em,
      create(ApplyPaymentUpdateRequestSchema, {
        orderId,
        paymentId,
        paymentStatus: status,
        amountCaptured: money(BigInt(row.captured_minor), row.currency ?? "EUR"),
        amountRefunded: money(refunded ?? BigInt(row.refunded_minor), row.currency ?? "EUR"),
        occurredAt: { seconds: BigInt(Math.floor(at.getTime() / 1000)), nanos: (at.getTime() % 1000) * 1_000_000 },
      }),
    ),
  );
}

/** The order's parcels as recorded (order_shipments): how many, how many not delivered, units ordered and shipped. */
async function parcelsOf(em: EntityManager, orderId: string) {
  return sqlOf(em).one<{ parcels: number; undelivered: number; ordered: number; shipped: number }>(
    `select (select count(*)::int from order_shipments where order_id = $1) as parcels,
            (select count(*)::int from order_shipments where order_id = $1 and delivered_at is null) as undelivered,
            (select coalesce(sum(quantity), 0)::int from order_items where order_id = $1) as ordered,
            (select coalesce(sum((i ->> 'quantity')::int), 0)::int
               from order_shipments s cross join jsonb_array_elements(s.items) i where s.order_id = $1) as shipped`,
    [orderId],
  );
}

/**
 * Every unit shipped and every parcel delivered. An order with no recorded parcel
 * (shipped before order_shipments existed) counts as delivered by its shipment.
 */
async function everythingDelivered(em: EntityManager, orderId: string): Promise<boolean> {
  const row = await parcelsOf(em, orderId);
  if (!row || row.parcels === 0) return true;
  return row.undelivered === 0 && row.shipped >= row.ordered;
}

export function orderConsumers(peers: PeerClients): EventHandler[] {
  return [
    onEvent(ShipmentCreatedSchema, "ship-order", async (em, e) => {
      const order = await orderRow(em, e.orderId);
      if (order) {
        const items = e.items.map((i) => ({ order_item_id: i.orderItemId, quantity: i.quantity }));
        await sqlOf(em).run("insert into order_shipments (shipment_id, order_id, items) values ($1, $2, $3::jsonb) on conflict do nothing", [
          e.shipmentId,
          e.orderId,
          JSON.stringify(items),
        ]);
      }
      // Some units still to ship: PARTIALLY_SHIPPED, until the parcel that completes the order.
      const parcels = order ? await parcelsOf(em, e.orderId) : undefined;
      const to = parcels && parcels.shipped < parcels.ordered ? OrderStatus.PARTIALLY_SHIPPED : OrderStatus.SHIPPED;
      await tolerant(() =>
        moveFulfilment(em, peers, system, e.orderId, to, `shipment ${e.shipmentId} created`, {
          carrier: e.carrierName,
          trackingNumber: e.trackingNumber,
          trackingUrl: e.trackingUrl,
          shipmentId: e.shipmentId,
          estimatedDelivery: e.estimatedDelivery ? timestampDate(e.estimatedDelivery) : undefined,
        }),
      );
    }),
    onEvent(ShipmentDeliveredSchema, "deliver-order", async (em, e) => {
      const at = e.deliveredAt ? timestampDate(e.deliveredAt) : new Date();
      await sqlOf(em).run("update order_shipments set delivered_at = coalesce(delivered_at, $2) where shipment_id = $1", [e.shipmentId, at]);
      if (!(await everythingDelivered(em, e.orderId))) return;
      await tolerant(() =>
        moveFulfilment(em, peers, system, e.orderId, OrderStatus.DELIVERED, `shipment ${e.shipmentId} delivered`, {
          at,
        }),
      );
    }),
    onEvent(PaymentAuthorizedSchema, "payment-authorized", (em, e) => wakeCheckout(em, e.orderId)),
    onEvent(PaymentFailedSchema, "payment-failed", (em, e) => wakeCheckout(em, e.orderId)),
    onEvent(PaymentSucceededSchema, "payment-succeeded", (em, e) =>
      paymentUpdate(em, e.orderId, e.paymentId, OrderPaymentStatus.PAID, e.occurredAt ? timestampDate(e.occurredAt) : new Date()),
    ),
    onEvent(PaymentVoidedSchema, "payment-voided", (em, e) =>
      paymentUpdate(em, e.orderId, e.paymentId, OrderPaymentStatus.VOIDED, e.occurredAt ? timestampDate(e.occurredAt) : new Date()),
    ),
    onEvent(PaymentRefundedSchema, "payment-refunded", async (em, e) => {
      const refunded = e.amountRefundedTotal?.amountMinor;
      await paymentUpdate(
        em,
        e.orderId,
        e.paymentId,
        e.fullyRefunded ? OrderPaymentStatus.REFUNDED : OrderPaymentStatus.PARTIALLY_REFUNDED,
        e.occurredAt ? timestampDate(e.occurredAt) : new Date(),
        refunded,
      );
    }),
  ];
}
