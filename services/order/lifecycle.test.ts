/**
 * The order after checkout, through the real mesh: a shipment (Shipping's
 * shipment.created) captures the payment and ships the order, its delivery
 * delivers it, WatchOrder sees each step and ends; the verified-purchase
 * check; cancellation by the customer (payment voided, stock back through
 * order.cancelled) and by an admin; the admin's status changes and notes;
 * keyset pages of ListMyOrders and ListOrders.
 */
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { startEdge } from "../../gateway/edge.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderNoteVisibility, OrderPaymentStatus, OrderService, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { ReviewService } from "../../gen/ecommerce/product/v1/review_pb.js";
import { ShipmentStatus } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, failure, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ ORDER_WATCH_POLL_MS: "50" });
});
afterAll(() => h?.stop());

async function placed(quantity = 1, stock = 10) {
  const p = await h.product(1500n, stock);
  const s = await h.shopper([[p, quantity]]);
  const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
  return { p, s, order: order! };
}

describe("fulfilment", () => {
  it("cart with a coupon -> PlaceOrder -> shipment.created captures the payment and ships the order -> shipment.delivered delivers it; WatchOrder sees every step and ends; the review is verified", async () => {
    const p = await h.product(1500n, 10);
    const s = await h.shopper([[p, 2]]);
    const code = await h.coupon(1000);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const order = (await h.orders.placeOrder(h.request(s.cartId), auth(s.token))).order!;
    expect(order.discountAmount!.amountMinor).toBe(300n);
    const seen: OrderStatus[] = [];
    const watching = (async () => {
      for await (const m of h.orders.watchOrder({ orderId: order.id }, auth(s.token))) seen.push(m.order!.status);
    })();
    await eventually(async () => (seen.length > 0 ? true : undefined), 10_000, "first watch message");

    const product = createClient(OrderService, createGrpcTransport({ baseUrl: h.mesh.url("order") }));
    const productCredential = auth(await h.issuer.service("product"));
    expect((await product.checkVerifiedPurchase({ userId: s.userId, productId: p.id }, productCredential)).verified).toBe(false);

    const { shipment } = await h.shipping.createShipment(
      { orderId: order.id, items: order.items.map((i) => ({ orderItemId: i.id, quantity: i.quantity })), weightGrams: 1000, trackingNumber: "TRACK-1234", idempotencyKey: `ship-${order.id}` },
      auth(h.admin),
    );
    const shipped = await eventually(async () => {
      const { order: o } = await h.orders.getOrder({ orderId: order.id }, auth(s.token));
      return o!.status === OrderStatus.SHIPPED ? o : undefined;
    }, 15_000, "order shipped");
    expect(shipped!.paymentStatus).toBe(OrderPaymentStatus.PAID);
    expect(shipped!.trackingNumber).toBe("TRACK-1234");
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [order.id]);
    expect(payments.map((x) => x.status)).toEqual(["succeeded"]);
    const verified = await product.checkVerifiedPurchase({ userId: s.userId, productId: p.id }, productCredential);
    expect([verified.verified, verified.orderId]).toEqual([true, order.id]);
    const reviews = createClient(ReviewService, createGrpcTransport({ baseUrl: h.mesh.url("product") }));
    const { review } = await reviews.createReview({ productId: p.id, rating: 5, title: "great", comment: "works" }, auth(s.token));
    expect(review!.isVerifiedPurchase).toBe(true);
    const notCancellable = await failure(h.orders.cancelOrder({ orderId: order.id }, auth(s.token)));
    expect([notCancellable.code, notCancellable.reason]).toEqual([Code.FailedPrecondition, "ORDER_NOT_CANCELLABLE"]);

    await h.shipping.addTrackingEvent({ shipmentId: shipment!.id, status: ShipmentStatus.IN_TRANSIT, description: "picked up", occurredAt: timestampNow() }, auth(h.admin));
    await h.shipping.addTrackingEvent({ shipmentId: shipment!.id, status: ShipmentStatus.DELIVERED, description: "delivered", occurredAt: timestampNow() }, auth(h.admin));
    await watching; // ends by itself at DELIVERED
    expect(seen[0]).toBe(OrderStatus.CONFIRMED);
    expect(seen).toContain(OrderStatus.SHIPPED);
    expect(seen.at(-1)).toBe(OrderStatus.DELIVERED);
    const events = await h.sql<{ subject: string }>("order", "select subject from outbox_events order by created_at");
    expect(events.map((e) => e.subject)).toEqual(expect.arrayContaining(["order.shipped", "order.delivered"]));
  });

  it("an order in two parcels is PARTIALLY_SHIPPED with the first, SHIPPED with the second, DELIVERED only when the last parcel arrives", async () => {
    const { order, s: shopper } = await placed(3);
    const [line] = order.items;
    const ship = async (quantity: number, n: number) =>
      (
        await h.shipping.createShipment(
          { orderId: order.id, items: [{ orderItemId: line!.id, quantity }], weightGrams: 500, trackingNumber: `PARCEL-${n}-${order.id.slice(0, 8)}`, idempotencyKey: `ship-${n}-${order.id}` },
          auth(h.admin),
        )
      ).shipment!;
    const status = async () => (await h.orders.getOrder({ orderId: order.id }, auth(shopper.token))).order!;
    const first = await ship(2, 1);
    const partly = await eventually(async () => {
      const o = await status();
      return o.status === OrderStatus.PARTIALLY_SHIPPED ? o : undefined;
    }, 15_000, "partially shipped with the first parcel");
    // The first parcel captures the payment in full and ships the order (shipped_at, its tracking).
    expect([partly.paymentStatus, partly.trackingNumber, partly.shippedAt !== undefined]).toEqual([OrderPaymentStatus.PAID, `PARCEL-1-${order.id.slice(0, 8)}`, true]);
    const deliver = (id: string) =>
      h.shipping.addTrackingEvent({ shipmentId: id, status: ShipmentStatus.DELIVERED, description: "delivered", occurredAt: timestampNow() }, auth(h.admin));
    await deliver(first.id);
    // The first parcel's delivery is recorded, and the order is still on its way (one unit not even shipped).
    await eventually(async () => {
      const [row] = await h.sql<{ delivered: boolean }>("order", "select delivered_at is not null as delivered from order_shipments where shipment_id = $1", [first.id]);
      return row?.delivered ? true : undefined;
    }, 15_000, "first parcel delivered");
    expect((await status()).status).toBe(OrderStatus.PARTIALLY_SHIPPED);
    // Not cancellable once a part has shipped.
    expect((await failure(h.orders.cancelOrder({ orderId: order.id, reason: "too late" }, auth(shopper.token)))).reason).toBe("ORDER_NOT_CANCELLABLE");
    const second = await ship(1, 2);
    const shipped = await eventually(async () => {
      const o = await status();
      return o.status === OrderStatus.SHIPPED ? o : undefined;
    }, 15_000, "shipped with the second parcel");
    expect(shipped.statusHistory.map((c) => c.status).filter((x) => x === OrderStatus.PARTIALLY_SHIPPED || x === OrderStatus.SHIPPED)).toEqual([OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED]);
    await deliver(second.id);
    const delivered = await eventually(async () => {
      const o = await status();
      return o.status === OrderStatus.DELIVERED ? o : undefined;
    }, 15_000, "delivered with the last parcel");
    expect(delivered.statusHistory.filter((e) => e.status === OrderStatus.DELIVERED)).toHaveLength(1);
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [order.id]);
    expect(payments.map((x) => x.status)).toEqual(["succeeded"]);
    // One order.shipped (the first parcel), one order.delivered.
    const outbox = await h.sql<{ subject: string; n: number }>(
      "order",
      "select subject, count(*)::int as n from outbox_events where subject in ('order.shipped', 'order.delivered') and position(convert_to($1, 'UTF8') in payload) > 0 group by subject order by subject",
      [order.id],
    );
    expect(outbox).toEqual([
      { subject: "order.delivered", n: 1 },
      { subject: "order.shipped", n: 1 },
    ]);
  });

  it("the admin moves CONFIRMED -> PROCESSING; a transition the contract does not allow is INVALID_STATUS_TRANSITION", async () => {
    const { order } = await placed();
    const { order: processing } = await h.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.PROCESSING, reason: "picking" }, auth(h.admin));
    expect(processing!.status).toBe(OrderStatus.PROCESSING);
    expect(processing!.statusHistory.at(-1)!.reason).toBe("picking");
    const bad = await failure(h.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.DELIVERED, reason: "no" }, auth(h.admin)));
    expect([bad.code, bad.reason]).toEqual([Code.FailedPrecondition, "INVALID_STATUS_TRANSITION"]);
    const mismatch = await failure(
      h.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.SHIPPED, reason: "x", expectedStatus: OrderStatus.CONFIRMED }, auth(h.admin)),
    );
    expect(mismatch.reason).toBe("STATUS_MISMATCH");
    const notSettable = await failure(h.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.REFUNDED, reason: "x" }, auth(h.admin)));
    expect([notSettable.code, notSettable.reason]).toEqual([Code.InvalidArgument, "STATUS_NOT_SETTABLE"]);
  });
});

describe("authorization expiry", () => {
  it("an authorization that expired before shipping (one-time token): SHIPPED is refused with PAYMENT_AUTHORIZATION_EXPIRED and an internal note; the order stays CONFIRMED", async () => {
    const { order } = await placed();
    await h.sql("payment", "update payments set authorization_expires_at = now() - interval '1 second' where order_id = $1", [order.id]);
    const refused = await failure(h.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.SHIPPED, reason: "handed over" }, auth(h.admin)));
    expect([refused.code, refused.reason]).toEqual([Code.FailedPrecondition, "PAYMENT_AUTHORIZATION_EXPIRED"]);
    const { order: admin } = await h.orders.adminGetOrder({ orderId: order.id }, auth(h.admin));
    expect(admin!.status).toBe(OrderStatus.CONFIRMED);
    expect(admin!.notes.map((n) => n.visibility)).toEqual([OrderNoteVisibility.INTERNAL]);
    // The back office cancels it: nothing is held any more (the hold lapsed), stock comes back.
    const { order: cancelled } = await h.orders.adminCancelOrder({ orderId: order.id, reason: "authorization expired" }, auth(h.admin));
    expect(cancelled!.status).toBe(OrderStatus.CANCELLED);
  });
});

describe("corrections and payment updates", () => {
  it("UpdateOrder changes the address before shipping, metadata and the estimated date", async () => {
    const { order } = await placed();
    const moved = { ...order.shippingAddress!, city: "Oakland" };
    const { order: updated } = await h.orders.updateOrder(
      { order: { id: order.id, shippingAddress: moved, metadata: { channel: "phone" } }, updateMask: { paths: ["shipping_address", "metadata"] } },
      auth(h.admin),
    );
    expect([updated!.shippingAddress!.city, updated!.metadata]).toEqual(["Oakland", { channel: "phone" }]);
    expect(updated!.totalAmount!.amountMinor).toBe(order.totalAmount!.amountMinor);
  });

  it("ApplyPaymentUpdate (Payment's credential): applied once, an older update changes nothing, another payment is PAYMENT_MISMATCH", async () => {
    const { order } = await placed();
    const payment = auth(await h.issuer.service("payment"));
    const at = (s: number) => ({ seconds: BigInt(Math.floor(Date.now() / 1000) + s), nanos: 0 });
    const base = { orderId: order.id, paymentId: order.paymentId, amountCaptured: order.totalAmount, amountRefunded: { amountMinor: 0n, currencyCode: "USD" } };
    const paid = await h.orders.applyPaymentUpdate({ ...base, paymentStatus: OrderPaymentStatus.PAID, occurredAt: at(0) }, payment);
    expect([paid.applied, paid.paymentStatus]).toEqual([true, OrderPaymentStatus.PAID]);
    const older = await h.orders.applyPaymentUpdate({ ...base, paymentStatus: OrderPaymentStatus.AUTHORIZED, occurredAt: at(-60) }, payment);
    expect([older.applied, older.paymentStatus]).toEqual([false, OrderPaymentStatus.PAID]);
    const other = await failure(h.orders.applyPaymentUpdate({ ...base, paymentId: "01900000-0000-7000-8000-000000000000", paymentStatus: OrderPaymentStatus.PAID, occurredAt: at(1) }, payment));
    expect(other.reason).toBe("PAYMENT_MISMATCH");
    const notAllowed = await failure(h.orders.applyPaymentUpdate({ ...base, paymentStatus: OrderPaymentStatus.PAID, occurredAt: at(2) }, auth(await h.issuer.service("cart"))));
    expect(notAllowed.code).toBe(Code.PermissionDenied);
  });
});

describe("cancellation", () => {
  it("the customer cancels before shipment: CANCELLED with history, payment voided, stock back (order.cancelled), coupon-free; again returns it unchanged", async () => {
    const { p, s, order } = await placed(3, 5);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 2, reserved: 0 });
    const { order: cancelled } = await h.orders.cancelOrder({ orderId: order.id, reason: "ordered twice" }, auth(s.token));
    expect([cancelled!.status, cancelled!.paymentStatus, cancelled!.cancellationReason]).toEqual([OrderStatus.CANCELLED, OrderPaymentStatus.VOIDED, "ordered twice"]);
    expect(cancelled!.statusHistory.at(-1)).toMatchObject({ status: OrderStatus.CANCELLED, previousStatus: OrderStatus.CONFIRMED, changedBy: s.userId });
    const payments = await h.sql<{ status: string }>("payment", "select status from payments where order_id = $1", [order.id]);
    expect(payments.map((x) => x.status)).toEqual(["cancelled"]);
    await eventually(async () => ((await h.stock(p.id)).onHand === 5 ? true : undefined), 15_000, "stock returned");
    const again = await h.orders.cancelOrder({ orderId: order.id }, auth(s.token));
    expect(again.order!.status).toBe(OrderStatus.CANCELLED);
    const stranger = await h.customer();
    expect((await failure(h.orders.cancelOrder({ orderId: order.id }, auth(stranger.token)))).code).toBe(Code.NotFound);
  });

  it("WatchOrder through the edge with the Connect protocol over HTTP/1.1 (as a browser): the current state, then the cancellation, then the end", async () => {
    const { s, order } = await placed();
    const edge = await startEdge({ port: 0, upstreams: { order: h.mesh.url("order") }, logLevel: process.env.TEST_LOG_LEVEL ?? "silent" });
    try {
      const browser = createClient(OrderService, createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" }));
      const seen: [OrderStatus, OrderStatus | undefined][] = [];
      const watching = (async () => {
        for await (const m of browser.watchOrder({ orderId: order.id }, auth(s.token))) seen.push([m.order!.status, m.change?.status]);
      })();
      await eventually(async () => (seen.length > 0 ? true : undefined), 10_000, "first message");
      await h.orders.cancelOrder({ orderId: order.id, reason: "changed my mind" }, auth(s.token));
      await watching;
      expect(seen[0]).toEqual([OrderStatus.CONFIRMED, undefined]);
      expect(seen.at(-1)).toEqual([OrderStatus.CANCELLED, OrderStatus.CANCELLED]);
    } finally {
      await edge.stop();
    }
  });

  it("an admin cancels with a reason; notes: internal ones only for admins", async () => {
    const { s, order } = await placed();
    await h.orders.addOrderNote({ orderId: order.id, note: "fraud check", visibility: OrderNoteVisibility.INTERNAL }, auth(h.admin));
    await h.orders.addOrderNote({ orderId: order.id, note: "sorry for the delay", visibility: OrderNoteVisibility.CUSTOMER }, auth(h.admin));
    const { order: mine } = await h.orders.getOrder({ orderId: order.id }, auth(s.token));
    expect(mine!.notes.map((n) => [n.note, n.createdBy])).toEqual([["sorry for the delay", ""]]);
    const { notes } = await h.orders.listOrderNotes({ orderId: order.id }, auth(h.admin));
    expect(notes.map((n) => n.note)).toEqual(["fraud check", "sorry for the delay"]);
    const { order: cancelled } = await h.orders.adminCancelOrder({ orderId: order.id, reason: "out of stock at the warehouse" }, auth(h.admin));
    expect(cancelled!.status).toBe(OrderStatus.CANCELLED);
    expect(cancelled!.statusHistory.at(-1)!.changedBy).not.toBe("");
    const { order: customerView } = await h.orders.getOrder({ orderId: order.id }, auth(s.token));
    expect(customerView!.statusHistory.at(-1)!.changedBy).toBe("");
  });
});

describe("lists", () => {
  it("ListMyOrders pages newest first by keyset; ListOrders filters by customer and counts; GetOrderByNumber finds one", async () => {
    const p = await h.product(1000n, 20);
    const c = await h.customer();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const cartId = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(c.token))).cart!.id;
      ids.push((await h.orders.placeOrder(h.request(cartId), auth(c.token))).order!.id);
    }
    const first = await h.orders.listMyOrders({ pageSize: 2 }, auth(c.token));
    expect(first.orders.map((o) => o.id)).toEqual([ids[2], ids[1]]);
    expect(first.orders[0]!.items).toHaveLength(1);
    expect(first.orders[0]!.statusHistory).toEqual([]);
    const second = await h.orders.listMyOrders({ pageSize: 2, pageToken: first.nextPageToken }, auth(c.token));
    expect(second.orders.map((o) => o.id)).toEqual([ids[0]]);
    expect(second.nextPageToken).toBe("");
    const admin = await h.orders.listOrders({ userId: c.userId, orderBy: "created_at asc", pageSize: 2 }, auth(h.admin));
    expect([admin.orders.map((o) => o.id), admin.totalSize]).toEqual([[ids[0], ids[1]], 3]);
    const next = await h.orders.listOrders({ userId: c.userId, orderBy: "created_at asc", pageSize: 2, pageToken: admin.nextPageToken }, auth(h.admin));
    expect(next.orders.map((o) => o.id)).toEqual([ids[2]]);
    const byProduct = await h.orders.listOrders({ productId: p.id, statuses: [OrderStatus.CONFIRMED], orderBy: "total_amount desc", pageSize: 1 }, auth(h.admin));
    expect([byProduct.orders.length, byProduct.totalSize]).toEqual([1, 3]);
    const rest = await h.orders.listOrders({ productId: p.id, statuses: [OrderStatus.CONFIRMED], orderBy: "total_amount desc", pageSize: 5, pageToken: byProduct.nextPageToken }, auth(h.admin));
    expect(new Set([...byProduct.orders, ...rest.orders].map((o) => o.id))).toEqual(new Set(ids));
    const replayed = await failure(h.orders.listOrders({ productId: p.id, pageToken: byProduct.nextPageToken }, auth(h.admin)));
    expect(replayed.code).toBe(Code.InvalidArgument);
    const { order } = await h.orders.getOrder({ orderId: ids[0]! }, auth(c.token));
    const prefix = await h.orders.listOrders({ orderNumberPrefix: order!.orderNumber.toLowerCase() }, auth(h.admin));
    expect(prefix.orders.map((o) => o.id)).toContain(ids[0]);
    expect((await failure(h.orders.listOrders({}, auth(c.token)))).code).toBe(Code.PermissionDenied);
    const byNumber = await h.orders.getOrderByNumber({ orderNumber: order!.orderNumber.toLowerCase() }, auth(c.token));
    expect(byNumber.order!.id).toBe(ids[0]);
  });
});
