/**
 * Faults around a checkout, with real processes:
 * - NATS down: orders are still placed (events wait in the outbox) and the
 *   events are published once NATS is back;
 * - the Payment's answer is lost (the checkout's deadline passes while the
 *   provider authorizes; the authorization is still made): a retry with the
 *   same key resumes the same checkout and the same payment, so there is one
 *   order and one authorization, never an orphan.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, failure, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ PAYMENT_SANDBOX_SLOW_MS: "3000", ORDER_CHECKOUT_LEASE_MS: "300", PAYMENT_SANDBOX_WEBHOOK_URL: "", PAYMENT_SANDBOX_ASYNC_MS: "300" });
});
afterAll(() => h?.stop());

describe("faults", () => {
  it("NATS down during checkout: the order is placed; order.created and order.confirmed are published when NATS is back", async () => {
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 1]]);
    await h.mesh.nats.pause();
    let orderId = "";
    try {
      const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
      expect(order!.status).toBe(OrderStatus.CONFIRMED);
      orderId = order!.id;
      const waiting = await h.sql<{ subject: string }>("order", "select subject from outbox_events where published_at is null and subject in ('order.created', 'order.confirmed')");
      expect(waiting.map((e) => e.subject).sort()).toEqual(["order.confirmed", "order.created"]);
    } finally {
      await h.mesh.nats.resume();
    }
    await eventually(
      async () => {
        const left = await h.sql<{ n: number }>("order", "select count(*)::int as n from outbox_events where published_at is null");
        return left[0]!.n === 0 ? true : undefined;
      },
      30_000,
      "outbox drained",
    );
    expect(orderId).not.toBe("");
  });

  it("the payment's answer is lost (deadline passed while the provider authorized): a retry with the same key gives one order and one authorization", async () => {
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 1]]);
    const req = h.request(s.cartId, { paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_slow" } } });
    const lost = await failure(h.orders.placeOrder(req, { ...auth(s.token), timeoutMs: 1500 }));
    expect([Code.Unavailable, Code.DeadlineExceeded]).toContain(lost.code);
    const attempted = await h.sql<{ n: number }>("payment", "select count(*)::int as n from payments where user_id = $1", [s.userId]);
    expect(attempted[0]!.n).toBe(1);

    const { order } = await h.orders.placeOrder(req, auth(s.token));
    expect(order!.status).toBe(OrderStatus.CONFIRMED);
    const orders = await h.sql<{ n: number }>("order", "select count(*)::int as n from orders where user_id = $1", [s.userId]);
    expect(orders[0]!.n).toBe(1);
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where user_id = $1", [s.userId]);
    expect(payments.map((x) => x.status)).toEqual(["authorized"]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
  });

  it("Payment stopped while it authorizes (the Order's call gives up), then started again: a retry with the same key gives one order and one authorization", async () => {
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 1]]);
    const req = h.request(s.cartId, { paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_slow" } } });
    const lost = h.orders.placeOrder(req, { ...auth(s.token), timeoutMs: 1500 });
    await eventually(async () => {
      const rows = await h.sql<{ n: number }>("payment", "select count(*)::int as n from payments where user_id = $1", [s.userId]);
      return rows[0]!.n === 1 ? true : undefined;
    }, 10_000, "authorization started");
    const stopping = h.restartPayment();
    expect([Code.Unavailable, Code.DeadlineExceeded]).toContain((await failure(lost)).code);
    await stopping;
    const { order } = await h.orders.placeOrder(req, auth(s.token));
    expect(order!.status).toBe(OrderStatus.CONFIRMED);
    const orders = await h.sql<{ n: number }>("order", "select count(*)::int as n from orders where user_id = $1", [s.userId]);
    expect(orders[0]!.n).toBe(1);
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where user_id = $1", [s.userId]);
    expect(payments.map((x) => x.status)).toEqual(["authorized"]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
  });

  it("an asynchronous payment: PlaceOrder answers PENDING; once the provider settles, the checkout finishes (CONFIRMED, stock committed)", async () => {
    const p = await h.product(1000n, 5);
    const s = await h.shopper([[p, 2]]);
    const req = h.request(s.cartId, { paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_async" } } });
    const createdBefore = (await h.sql<{ n: number }>("order", "select count(*)::int as n from outbox_events where subject = 'order.created'"))[0]!.n;
    const { order } = await h.orders.placeOrder(req, auth(s.token));
    expect([order!.status, order!.paymentStatus]).toEqual([OrderStatus.PENDING, OrderPaymentStatus.PENDING]);
    expect((await h.orders.placeOrder(req, auth(s.token))).order!.id).toBe(order!.id);
    const confirmed = await eventually(async () => {
      const { order: o } = await h.orders.getOrder({ orderId: order!.id }, auth(s.token));
      return o!.status === OrderStatus.CONFIRMED ? o : undefined;
    }, 20_000, "checkout finished");
    expect(confirmed!.paymentStatus).toBe(OrderPaymentStatus.AUTHORIZED);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 3, reserved: 0 });
    const created = await h.sql<{ n: number }>("order", "select count(*)::int as n from outbox_events where subject = 'order.created'");
    expect(created[0]!.n).toBe(createdBefore + 1);
  });
});
