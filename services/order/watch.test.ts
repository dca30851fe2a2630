/**
 * WatchOrder reports every status change, also when several happen between
 * two of its polls: here the poll period is long (10 s) and the back office
 * moves the order CONFIRMED -> PROCESSING -> SHIPPED -> DELIVERED at once;
 * the stream still carries one message per change, in order, then ends.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ ORDER_WATCH_POLL_MS: "10000" });
});
afterAll(() => h?.stop());

describe("WatchOrder", () => {
  it("one message per status change, even when one poll finds several", async () => {
    const p = await h.product(1500n, 5);
    const s = await h.shopper([[p, 1]]);
    const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
    const seen: { status: OrderStatus; change?: OrderStatus }[] = [];
    const watching = (async () => {
      for await (const m of h.orders.watchOrder({ orderId: order!.id }, auth(s.token))) seen.push({ status: m.order!.status, change: m.change?.status });
    })();
    await eventually(async () => (seen.length > 0 ? true : undefined), 10_000, "first message");
    for (const status of [OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.DELIVERED]) {
      await h.orders.updateOrderStatus({ orderId: order!.id, status, reason: "by hand" }, auth(h.admin));
    }
    await watching; // ends at DELIVERED
    expect(seen[0]).toEqual({ status: OrderStatus.CONFIRMED, change: undefined });
    expect(seen.flatMap((m) => (m.change ? [m.change] : []))).toEqual([OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.DELIVERED]);
    expect(seen.at(-1)).toEqual({ status: OrderStatus.DELIVERED, change: OrderStatus.DELIVERED });
  });
});
