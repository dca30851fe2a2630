/**
 * Events the Product service acts on. order.cancelled gives the order's stock
 * back: an ACTIVE reservation is released, the units of a COMMITTED one go
 * back on hand (reservations.ts). Runs in the kit's inbox transaction, so a
 * redelivered event is a no-op.
 */
import { OrderCancelledSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { returnStockOfCancelledOrder } from "./reservations.ts";
import { sqlOf } from "../../kit/sql.ts";

export function productConsumers(): EventHandler[] {
  return [
    onEvent(OrderCancelledSchema, "release-stock-of-cancelled-order", async (em, event) => {
      await returnStockOfCancelledOrder(sqlOf(em), event.orderId, event.reason || "order_cancelled");
    }),
  ];
}
