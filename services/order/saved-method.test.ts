/**
 * Checkout with the customer's saved address and saved payment method (the
 * User service in the mesh: Payment fetches the token, Order never sees it),
 * and the renewal of an authorization that expired before the order shipped.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CardBrand, PaymentMethodType } from "../../gen/ecommerce/common/v1/payment_method_pb.js";
import { OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { AddressType } from "../../gen/ecommerce/user/v1/user_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { address, auth, failure, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ ORDER_CHECKOUT_LEASE_MS: "300" }, { user: true });
});
afterAll(() => h?.stop());

async function savedShopper() {
  const c = await h.registered();
  const { address: saved } = await h.users.addAddress({ type: AddressType.BOTH, postalAddress: { ...address, city: "Los Angeles" } }, auth(c.token));
  const { paymentMethod } = await h.users.addPaymentMethod(
    { type: PaymentMethodType.CREDIT_CARD, providerToken: "tok_sandbox_success", cardBrand: CardBrand.MASTERCARD, last4: "4444", expiryMonth: 11, expiryYear: new Date().getUTCFullYear() + 2 },
    auth(c.token),
  );
  return { ...c, addressId: saved!.id, methodId: paymentMethod!.id };
}

describe("saved address and payment method", () => {
  it("places the order with them: address snapshot, method display; another customer's ids are ADDRESS_NOT_FOUND / PAYMENT_METHOD_NOT_FOUND with nothing held", async () => {
    const p = await h.product(1200n, 5);
    const c = await savedShopper();
    const cartId = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(c.token))).cart!.id;
    const other = await savedShopper();
    const otherCart = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(other.token))).cart!.id;
    const noAddress = await failure(
      h.orders.placeOrder(h.request(otherCart, { shippingDestination: { case: "shippingAddressId", value: c.addressId } }), auth(other.token)),
    );
    expect([noAddress.code, noAddress.reason]).toEqual([Code.NotFound, "ADDRESS_NOT_FOUND"]);
    const noMethod = await failure(h.orders.placeOrder(h.request(otherCart, { paymentSource: { case: "paymentMethodId", value: c.methodId } }), auth(other.token)));
    expect([noMethod.code, noMethod.reason]).toEqual([Code.NotFound, "PAYMENT_METHOD_NOT_FOUND"]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 0 });

    const { order } = await h.orders.placeOrder(
      h.request(cartId, { shippingDestination: { case: "shippingAddressId", value: c.addressId }, paymentSource: { case: "paymentMethodId", value: c.methodId } }),
      auth(c.token),
    );
    expect(order!.status).toBe(OrderStatus.CONFIRMED);
    expect(order!.shippingAddress!.city).toBe("Los Angeles");
    expect(order!.paymentMethod).toMatchObject({ type: "credit_card", brand: "mastercard", last4: "4444" });
    // The address book may change; the order keeps its snapshot.
    await h.users.deleteAddress({ addressId: c.addressId }, auth(c.token)).catch(() => undefined);
    expect((await h.orders.getOrder({ orderId: order!.id }, auth(c.token))).order!.shippingAddress!.city).toBe("Los Angeles");
  });

  it("an authorization that expired before shipping is renewed from the saved method and captured: SHIPPED and PAID, the lapsed payment cancelled", async () => {
    const p = await h.product(1200n, 5);
    const c = await savedShopper();
    const cartId = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(c.token))).cart!.id;
    const { order } = await h.orders.placeOrder(h.request(cartId, { paymentSource: { case: "paymentMethodId", value: c.methodId } }), auth(c.token));
    await h.sql("payment", "update payments set authorization_expires_at = now() - interval '1 second' where order_id = $1", [order!.id]);
    const { order: shipped } = await h.orders.updateOrderStatus({ orderId: order!.id, status: OrderStatus.SHIPPED, reason: "handed over", carrier: "Test" }, auth(h.admin));
    expect([shipped!.status, shipped!.paymentStatus]).toEqual([OrderStatus.SHIPPED, OrderPaymentStatus.PAID]);
    expect(shipped!.paymentId).not.toBe(order!.paymentId);
    const payments = await h.sql<{ id: string; status: string }>("payment", "select id, status from payments where order_id = $1 order by created_at", [order!.id]);
    expect(payments.map((x) => x.status)).toEqual(["cancelled", "succeeded"]);
    expect(payments[1]!.id).toBe(shipped!.paymentId);
  });

  it("stopped after recording the authorization's start, before calling Payment: after a restart the recovery job sends it (saved method) and finishes the order", async () => {
    await h.restartOrder({ ORDER_TEST_HALT_AFTER_STEP: "authorize:started", ORDER_RECOVERY_EVERY_MS: "3600000" });
    const p = await h.product(1200n, 5);
    const c = await savedShopper();
    const cartId = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(c.token))).cart!.id;
    const crash = await failure(h.orders.placeOrder(h.request(cartId, { paymentSource: { case: "paymentMethodId", value: c.methodId } }), auth(c.token)));
    expect(crash.code).toBe(Code.Unavailable);
    expect((await h.sql<{ n: number }>("payment", "select count(*)::int as n from payments where user_id = $1", [c.userId]))[0]!.n).toBe(0);

    await h.restartOrder({ ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "600000" });
    const row = await eventually(async () => {
      const rows = await h.sql<{ status: string; checkout: string }>("order", "select status, checkout from orders where user_id = $1", [c.userId]);
      return rows[0]?.checkout === "done" ? rows[0] : undefined;
    }, 15_000, "checkout finished by the job");
    expect(row.status).toBe("confirmed");
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where user_id = $1", [c.userId]);
    expect(payments.map((x) => x.status)).toEqual(["authorized"]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
  });
});
