/**
 * The Order service stopped in the middle of a checkout, then started again:
 * the recovery job (or a retry with the same key) finishes or undoes the
 * saga. The "crash" is deterministic: ORDER_TEST_HALT_AFTER_STEP makes
 * PlaceOrder stop dead right after a step is recorded (nothing compensated,
 * nothing more written), then the process is stopped and a new one started on
 * the same database.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, failure, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ ORDER_CHECKOUT_LEASE_MS: "300", PAYMENT_SANDBOX_ASYNC_MS: "600000" });
});
afterAll(() => h?.stop());

const halted = { ORDER_RECOVERY_EVERY_MS: "3600000" };

async function orderOf(userId: string) {
  const rows = await h.sql<{ id: string; status: string; payment_status: string; checkout: string }>(
    "order",
    "select id, status, payment_status, checkout from orders where user_id = $1",
    [userId],
  );
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

describe("checkout recovery after a crash", () => {
  it("stopped after the stock was reserved, before the payment: a retry with the same key after the restart resumes the same checkout", async () => {
    await h.restartOrder({ ...halted, ORDER_TEST_HALT_AFTER_STEP: "reserve" });
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 2]]);
    const req = h.request(s.cartId);
    const crash = await failure(h.orders.placeOrder(req, auth(s.token)));
    expect(crash.code).toBe(Code.Unavailable);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 2 });
    expect((await orderOf(s.userId)).checkout).toBe("running");
    // While it is running, another checkout of the same cart (another key) is refused.
    const second = await failure(h.orders.placeOrder(h.request(s.cartId), auth(s.token)));
    expect([second.code, second.reason]).toEqual([Code.Aborted, "CHECKOUT_IN_PROGRESS"]);

    await h.restartOrder({ ORDER_TEST_HALT_AFTER_STEP: "", ORDER_CHECKOUT_TIMEOUT_MS: "600000" });
    const { order } = await h.orders.placeOrder(req, auth(s.token));
    expect(order!.status).toBe(OrderStatus.CONFIRMED);
    expect(order!.id).toBe((await orderOf(s.userId)).id);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 3, reserved: 0 });
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [order!.id]);
    expect(payments.map((x) => x.status)).toEqual(["authorized"]);
  });

  it("stopped after the order row was written and stock reserved, nobody retries: the recovery job undoes it (reservation released, order discarded)", async () => {
    await h.restartOrder({ ...halted, ORDER_TEST_HALT_AFTER_STEP: "reserve" });
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 3]]);
    await failure(h.orders.placeOrder(h.request(s.cartId), auth(s.token)));
    expect(await h.stock(p.id)).toMatchObject({ reserved: 3 });

    await h.restartOrder({ ORDER_TEST_HALT_AFTER_STEP: "", ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    const row = await eventually(async () => {
      const r = await orderOf(s.userId);
      return r.checkout === "failed" ? r : undefined;
    }, 15_000, "checkout undone");
    expect(row.status).toBe("cancelled");
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
    const payments = await h.sql<{ n: number }>("payment", "select count(*)::int as n from payments where user_id = $1", [s.userId]);
    expect(payments[0]!.n).toBe(0);
    expect((await h.orders.listMyOrders({}, auth(s.token))).orders).toEqual([]);
    // The cart is untouched: it can be checked out again.
    const again = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
    expect(again.order!.status).toBe(OrderStatus.CONFIRMED);
  });

  it("stopped after the payment was authorized: the recovery job finishes the order (stock committed, cart converted, CONFIRMED, one authorization)", async () => {
    await h.restartOrder({ ...halted, ORDER_TEST_HALT_AFTER_STEP: "authorize" });
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 1]]);
    await failure(h.orders.placeOrder(h.request(s.cartId), auth(s.token)));
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 1 });

    await h.restartOrder({ ORDER_TEST_HALT_AFTER_STEP: "", ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    const row = await eventually(async () => {
      const r = await orderOf(s.userId);
      return r.checkout === "done" ? r : undefined;
    }, 15_000, "checkout finished");
    expect([row.status, row.payment_status]).toEqual(["confirmed", "authorized"]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
    const { order } = await h.orders.getOrder({ orderId: row.id }, auth(s.token));
    expect(order!.paymentStatus).toBe(OrderPaymentStatus.AUTHORIZED);
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [row.id]);
    expect(payments.map((x) => x.status)).toEqual(["authorized"]);
    const carts = await h.sql<{ status: string }>("cart", "select status from carts where id = $1", [s.cartId]);
    expect(carts[0]!.status).toBe("converted");
  });

  it("an asynchronous payment still pending at the checkout timeout: the order is cancelled by the system, the payment voided, stock released, order.cancelled published", async () => {
    await h.restartOrder({ ORDER_TEST_HALT_AFTER_STEP: "", ORDER_CHECKOUT_TIMEOUT_MS: "1000" });
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 2]]);
    const req = h.request(s.cartId, { paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_async" } } });
    const { order } = await h.orders.placeOrder(req, auth(s.token));
    expect(order!.status).toBe(OrderStatus.PENDING);
    expect(await h.stock(p.id)).toMatchObject({ reserved: 2 });
    const cancelled = await eventually(async () => {
      const { order: o } = await h.orders.getOrder({ orderId: order!.id }, auth(s.token));
      return o!.status === OrderStatus.CANCELLED ? o : undefined;
    }, 15_000, "cancelled at the checkout timeout");
    expect([cancelled!.cancellationReason, cancelled!.statusHistory.at(-1)!.changedBy]).toEqual(["checkout_timeout", "system"]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [order!.id]);
    expect(payments.map((x) => x.status)).toEqual(["cancelled"]);
    const events = await h.sql<{ n: number }>("order", "select count(*)::int as n from outbox_events where subject = 'order.cancelled'");
    expect(events[0]!.n).toBe(1);
  });
});
