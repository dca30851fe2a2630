/**
 * ORDER_CAPTURE=checkout: PlaceOrder captures at once (CONFIRMED, PAID); a
 * cancellation then refunds the capture in full, and payment.refunded moves
 * the payment status to REFUNDED.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ ORDER_CAPTURE: "checkout" });
});
afterAll(() => h?.stop());

describe("capture at checkout", () => {
  it("PlaceOrder captures (PAID); CancelOrder refunds in full; payment.refunded makes it REFUNDED; stock comes back", async () => {
    const p = await h.product(2000n, 4);
    const s = await h.shopper([[p, 2]]);
    const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
    expect([order!.status, order!.paymentStatus]).toEqual([OrderStatus.CONFIRMED, OrderPaymentStatus.PAID]);
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [order!.id]);
    expect(payments.map((x) => x.status)).toEqual(["succeeded"]);

    const { order: cancelled } = await h.orders.cancelOrder({ orderId: order!.id, reason: "no longer needed" }, auth(s.token));
    expect(cancelled!.status).toBe(OrderStatus.CANCELLED);
    const refunded = await eventually(async () => {
      const { order: o } = await h.orders.getOrder({ orderId: order!.id }, auth(s.token));
      return o!.paymentStatus === OrderPaymentStatus.REFUNDED ? o : undefined;
    }, 20_000, "refund applied");
    expect(refunded!.amountRefunded!.amountMinor).toBe(order!.totalAmount!.amountMinor);
    await eventually(async () => ((await h.stock(p.id)).onHand === 4 ? true : undefined), 15_000, "stock returned");
  });
});
