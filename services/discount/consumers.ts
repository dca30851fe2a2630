/**
 * What Discount learns from other services' events: order.created says a
 * customer has ordered, so a first-order rule no longer holds for them in a
 * quote whose snapshot does not say (ValidateCoupon, Cart's CalculateDiscounts;
 * cart.proto's ApplyCoupon checks first-order conditions "now for a signed-in
 * user"). The kit's inbox makes a redelivery a
 * no-op; the first order seen stays. Checkout stays authoritative: Order sends
 * is_first_order to RedeemDiscounts, so an event still in flight can at worst
 * let a code into a cart, never into an order.
 */
import { OrderCreatedSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { sqlOf } from "../../kit/sql.ts";

export function discountConsumers(): EventHandler[] {
  return [
    onEvent(OrderCreatedSchema, "customer-ordered", async (em, e) => {
      await sqlOf(em).run("insert into customer_orders (user_id, first_order_id) values ($1, $2) on conflict (user_id) do nothing", [e.userId, e.orderId]);
    }),
  ];
}

/** Whether the customer has placed an order, as far as order.created has told. */
export async function hasOrdered(em: EntityManager, userId: string): Promise<boolean> {
  return (await sqlOf(em).one("select 1 from customer_orders where user_id = $1", [userId])) !== undefined;
}
