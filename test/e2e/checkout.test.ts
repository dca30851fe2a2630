/**
 * Issue 11's "done when" and issue 12's order and payment mails, end to end:
 * every implemented service (Auth, User, Product, Cart, Discount, Payment,
 * Shipping, Order, Notification) on a private nats-server and throwaway
 * databases, the edge in front, and a real SMTP peer (smtp-server +
 * mailparser). Every customer call goes through the edge with a browser-style
 * Connect client (HTTP/1.1, JSON); the back office's setup (catalog, stock,
 * coupon, carrier, shipment) calls the services directly with a real admin's
 * token; the carrier reports through the edge's plain-HTTP webhook route.
 *
 * register → the verification mail's link verifies → log in → cart → coupon →
 * PreviewOrder = PlaceOrder (sandbox card) → confirmation mail with the
 * order's lines and totals → WatchOrder (Connect server stream through the
 * edge) → shipment (payment captured, receipt and shipped mails) → the
 * carrier's webhooks → delivered (mail) → WatchOrder saw CONFIRMED, SHIPPED,
 * DELIVERED and ended → a verified-purchase review. Each mail exactly once.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdge, type RunningEdge } from "../../gateway/edge.ts";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { file_ecommerce_auth_v1_events } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { NotificationChannel, NotificationService } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { file_ecommerce_order_v1_events } from "../../gen/ecommerce/order/v1/events_pb.js";
import { OrderPaymentStatus, OrderService, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { file_ecommerce_payment_v1_events } from "../../gen/ecommerce/payment/v1/events_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ReviewService } from "../../gen/ecommerce/product/v1/review_pb.js";
import { file_ecommerce_shipping_v1_events } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import { ShipmentStatus, ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { errorReason } from "../../kit/errors.ts";
import { streamOf } from "../../kit/events/contracts.ts";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import { freePort } from "../../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { signWebhook } from "../../kit/webhooks.ts";
import { authService } from "../../services/auth/service.ts";
import { cartService } from "../../services/cart/service.ts";
import { discountService } from "../../services/discount/service.ts";
import { linkIn, SmtpPeer } from "../../services/notification/testing.ts";
import { notificationService } from "../../services/notification/service.ts";
import { orderService } from "../../services/order/service.ts";
import { paymentService } from "../../services/payment/service.ts";
import { productService } from "../../services/product/service.ts";
import { developmentSandboxWebhookSecret } from "../../services/shipping/config.ts";
import { shippingService } from "../../services/shipping/service.ts";
import { userService } from "../../services/user/service.ts";

const storefront = "https://shop.example";
const password = "velvet otter maple drum 4711";
const stamp = Date.now().toString(36);
const eur = (amountMinor: bigint) => money(amountMinor, "EUR");
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
/** "€72.77" from minor units, built from the bigint (what the mail must show, en locale). */
const euros = (minor: bigint) => `€${minor / 100n}.${(minor % 100n).toString().padStart(2, "0")}`;

let mesh: TestMesh;
let edge: RunningEdge;
let smtp: SmtpPeer;
let nc: NatsConnection;
let admin: string;

const viaEdge = () => createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1", useBinaryFormat: false });
const direct = <S extends Parameters<typeof createClient>[0]>(service: S, name: Parameters<TestMesh["url"]>[0]) =>
  createClient(service, createGrpcTransport({ baseUrl: mesh.url(name) }));

/** A signed-in admin: registered, promoted with the documented create-admin command, signed in again. */
async function adminToken(): Promise<string> {
  const auth = direct(AuthService, "auth");
  const email = `checkout-admin-${stamp}@example.test`;
  await auth.register({ email, password });
  execFileSync(process.execPath, [join(import.meta.dirname, "..", "..", "services", "auth", "create-admin.ts"), "--email", email], {
    env: { ...process.env, DATABASE_URL: mesh.services.auth!.ctx.config.databaseUrl, LOG_LEVEL: "silent" },
    stdio: "ignore",
  });
  return (await auth.login({ email, password })).tokens!.accessToken;
}

const mailsTo = (address: string) => smtp.to(address);
const mailWith = (address: string, subject: string | RegExp) =>
  eventually(async () => mailsTo(address).find((m) => (typeof subject === "string" ? m.parsed.subject === subject : subject.test(m.parsed.subject ?? ""))), 30_000, `mail "${subject}"`);

/** Waits until Notification's durable on `stream` has handled everything published so far. */
async function consumedByNotification(stream: string) {
  const jsm = await jetstream(nc).jetstreamManager();
  await eventually(async () => {
    const info = await jsm.consumers.info(stream, `notification_${stream}`);
    return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
  }, 30_000, `${stream} consumed by notification`);
}

beforeAll(async () => {
  smtp = new SmtpPeer();
  await smtp.start(0);
  const edgePort = await freePort(); // in the mail (the one-click unsubscribe link), so chosen first
  mesh = await startMesh(
    [authService, userService, productService, discountService, cartService, shippingService, paymentService, orderService, notificationService],
    {
      SHOP_CURRENCY: "EUR",
      SMTP_HOST: "127.0.0.1",
      SMTP_PORT: String(smtp.port),
      SMTP_TLS: "off",
      STOREFRONT_URL: storefront,
      NOTIFICATION_PUBLIC_URL: `http://127.0.0.1:${edgePort}`,
      NOTIFICATION_DELIVERY_EVERY_MS: "100",
      PAYMENT_SANDBOX_WEBHOOK_URL: "off",
      ORDER_WATCH_POLL_MS: "50",
      AUTH_RATE_LIMIT_PER_IP: "100000",
      AUTH_RATE_LIMIT_PER_EMAIL: "100",
    },
  );
  const upstreams = Object.fromEntries(
    (["auth", "user", "product", "discount", "cart", "shipping", "payment", "order", "notification"] as const).map((n) => [n, mesh.url(n)]),
  );
  edge = await startEdge({ port: edgePort, host: "127.0.0.1", upstreams, logLevel: process.env.TEST_LOG_LEVEL ?? "silent" });
  nc = await natsConnect({ servers: mesh.nats.url });
  admin = await adminToken();
});

afterAll(async () => {
  await nc?.close();
  await edge?.stop();
  await mesh?.stop();
  await smtp?.stop();
});

describe("checkout end to end, through the edge, with real mail", () => {
  it("guest cart → register → verify by mail → log in → merge + coupon → preview = place → confirmation → shipment (capture, receipt, shipped) → carrier webhooks → delivered → WatchOrder saw each step → verified review; every mail once", async () => {
    // --- The back office: catalog, stock, coupon, a sandbox carrier with a rate (straight to the services).
    const products = direct(ProductService, "product");
    const inventory = direct(InventoryService, "product");
    const product = async (name: string, priceMinor: bigint, weightGrams: number) => {
      const { product: p } = await products.createProduct(
        { sku: `${name}-${stamp}`, name: `${name} ${stamp}`, price: eur(priceMinor), status: ProductStatus.ACTIVE, isVisible: true, weightGrams },
        bearer(admin),
      );
      await inventory.adjustStock({ idempotencyKey: `stock-${name}-${stamp}`, productId: p!.id, change: { case: "delta", value: 10 }, reason: 1 }, bearer(admin));
      return p!;
    };
    const kettle = await product("kettle", 2500n, 800);
    const tea = await product("tea", 1250n, 200);
    const discounts = direct(DiscountService, "discount");
    const { promotion } = await discounts.createPromotion(
      { name: `Ten percent ${stamp}`, type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 1000 }, currencyCode: "EUR", isActive: true },
      bearer(admin),
    );
    const code = `TEN${stamp}`.toUpperCase();
    await discounts.createCoupon({ promotionId: promotion!.id, code }, bearer(admin));
    const shipping = direct(ShippingService, "shipping");
    // The carrier code "sandbox" selects the built-in provider (SBX tracking numbers, its webhook key).
    const { carrier } = await shipping.createCarrier(
      { code: "sandbox", name: "Sandbox Parcel", trackingUrlTemplate: "https://track.example.com/sandbox/{tracking_number}", isActive: true },
      bearer(admin),
    );
    const { shippingMethod } = await shipping.createShippingMethod(
      { carrierId: carrier!.id, code: "standard", name: "Standard", minDays: 2, maxDays: 4, isActive: true },
      bearer(admin),
    );
    await shipping.createShippingRate({ methodId: shippingMethod!.id, minWeightGrams: 0, maxWeightGrams: 1_000_000, price: eur(490n), freeAbove: eur(50_000n) }, bearer(admin));

    // --- A guest puts the tea in a cart before signing up.
    const carts = createClient(CartService, viaEdge());
    const { guestToken } = (await carts.addItem({ productId: tea.id, quantity: 1 })).cart!;
    expect(guestToken).not.toBe("");

    // --- Sign-up through the edge; the verification mail's link verifies the account.
    const auth = createClient(AuthService, viaEdge());
    const email = `checkout-shopper-${stamp}@example.test`;
    const registered = await auth.register({ email, password, firstName: "Ada", lastName: "Lovelace", preferredLanguage: "en-GB" });
    const userId = registered.user!.id;
    expect(registered.user!.emailVerified).toBe(false);
    const verification = await mailWith(email, "Confirm your email address");
    const link = linkIn(verification.parsed.text!, `${storefront}/verify-email?token=`);
    expect((await auth.verifyEmail({ token: link.searchParams.get("token")! })).userId).toBe(userId);
    await mailWith(email, "Your email address is confirmed");
    const token = (await auth.login({ email, password })).tokens!.accessToken;
    expect((await auth.getMe({}, bearer(token))).user!.emailVerified).toBe(true);

    // --- The guest cart becomes the customer's; 2 kettles and the coupon are added through the edge.
    expect(await carts.mergeGuestCart({ guestToken }, bearer(token))).toMatchObject({ merged: true, mergedLineCount: 1 });
    const filled = (await carts.addItem({ productId: kettle.id, quantity: 2 }, bearer(token))).cart!;
    const cart = (await carts.applyCoupon({ code: code.toLowerCase(), expectedVersion: filled.version }, bearer(token))).cart!;
    // By hand: 2 × 25.00 + 12.50 = 62.50; 10 % = 6.25 (5.00 on the kettles, 1.25 on the tea); 56.25.
    expect(cart).toMatchObject({ couponCode: code, subtotal: eur(6250n), discountTotal: eur(625n), total: eur(5625n), currencyCode: "EUR" });

    // --- PreviewOrder, then PlaceOrder with the same inputs, through the edge.
    // To Berlin (DE: 19 % on the net of discount, per line and on shipping, each rounded half up):
    //   kettles (50.00 − 5.00) × 19 % = 8.55; tea (12.50 − 1.25) × 19 % = 2.1375 → 2.14; shipping 4.90 × 19 % = 0.931 → 0.93
    //   tax 11.62; total 62.50 − 6.25 + 4.90 + 11.62 = 72.77.
    const subtotal = 2n * 2500n + 1250n;
    const discount = (2n * 2500n) / 10n + 1250n / 10n;
    const shippingPrice = 490n;
    const half = (n: bigint, d: bigint) => (n + d / 2n) / d;
    const kettleTax = half((5000n - 500n) * 1900n, 10_000n);
    const teaTax = half((1250n - 125n) * 1900n, 10_000n);
    const shippingTax = half(shippingPrice * 1900n, 10_000n);
    const tax = kettleTax + teaTax + shippingTax;
    const total = subtotal - discount + shippingPrice + tax;
    expect([kettleTax, teaTax, shippingTax, tax, total]).toEqual([855n, 214n, 93n, 1162n, 7277n]);

    const berlin = { firstName: "Ada", lastName: "Lovelace", addressLine1: "Unter den Linden 1", city: "Berlin", postalCode: "10117", countryCode: "DE" };
    const orders = createClient(OrderService, viaEdge());
    const destination = { case: "shippingAddress" as const, value: berlin };
    const { preview } = await orders.previewOrder({ cartId: cart.id, shippingDestination: destination, shippingMethodId: shippingMethod!.id }, bearer(token));
    expect(preview).toMatchObject({ subtotal: eur(subtotal), discountAmount: eur(discount), shippingAmount: eur(shippingPrice), taxAmount: eur(tax), totalAmount: eur(total) });
    const idempotencyKey = `checkout-${stamp}`;
    const place = () =>
      orders.placeOrder(
        {
          cartId: cart.id,
          shippingDestination: destination,
          shippingMethodId: shippingMethod!.id,
          paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_success" } },
          expectedTotal: eur(total),
          idempotencyKey,
        },
        bearer(token),
      );
    const order = (await place()).order!;
    expect(order).toMatchObject({
      userId,
      status: OrderStatus.CONFIRMED,
      paymentStatus: OrderPaymentStatus.AUTHORIZED,
      currencyCode: "EUR",
      subtotal: eur(subtotal),
      discountAmount: eur(discount),
      shippingAmount: eur(shippingPrice),
      taxAmount: eur(tax),
      totalAmount: eur(total),
    });
    expect(order.orderNumber).toMatch(/^ORD-\d{4}-\d{6,}$/);
    expect(order.discounts).toMatchObject([{ promotionId: promotion!.id, couponCode: code, amount: eur(discount) }]);
    const line = (productId: string) => order.items.find((i) => i.productId === productId)!;
    expect(line(kettle.id)).toMatchObject({ quantity: 2, unitPrice: eur(2500n), totalPrice: eur(5000n), discountAmount: eur(500n), taxAmount: eur(kettleTax) });
    expect(line(tea.id)).toMatchObject({ quantity: 1, unitPrice: eur(1250n), totalPrice: eur(1250n), discountAmount: eur(125n), taxAmount: eur(teaTax) });
    // The same key again: the same order, no second charge.
    expect((await place()).order!.id).toBe(order.id);
    const payments = () => sqlOf(mesh.services.payment!.ctx.orm.em.fork()).all<{ status: string }>("select status from payments where order_id = $1", [order.id]);
    expect((await payments()).map((p) => p.status)).toEqual(["authorized"]);

    // --- The confirmation mail: the order's lines and totals, formatted from the order's own amounts.
    const confirmation = await mailWith(email, `Your order ${order.orderNumber}`);
    const text = confirmation.parsed.text!;
    expect(text).toContain("Thank you for your order, Ada.");
    expect(text).toContain(`- 2 × ${kettle.name}: ${euros(order.items.find((i) => i.productId === kettle.id)!.totalPrice!.amountMinor)}`);
    expect(text).toContain(`- 2 × ${kettle.name}: €50.00`);
    expect(text).toContain(`- 1 × ${tea.name}: €12.50`);
    expect(text).toContain(`Subtotal ${euros(order.subtotal!.amountMinor)}`);
    expect(text).toContain(`Discount -${euros(order.discountAmount!.amountMinor)}`);
    expect(text).toContain(`Shipping ${euros(order.shippingAmount!.amountMinor)}`);
    expect(text).toContain(`Tax ${euros(order.taxAmount!.amountMinor)}`);
    expect(text).toContain(`Total ${euros(order.totalAmount!.amountMinor)}`);
    expect(text).toContain("Total €72.77");
    expect(text).toContain(`${storefront}/orders/${order.id}`);
    expect(confirmation.parsed.html).toContain(`<td>${kettle.name}</td>`);
    // Stock is committed (10 − 2 kettles, 10 − 1 tea, nothing still reserved); the payment is only authorized, so no receipt yet.
    const stock = async (productId: string) =>
      (await sqlOf(mesh.services.product!.ctx.orm.em.fork()).one<{ on_hand: number; reserved: number }>(
        "select coalesce(sum(quantity), 0)::int as on_hand, coalesce(sum(reserved_quantity), 0)::int as reserved from product_inventory where product_id = $1",
        [productId],
      ))!;
    expect([await stock(kettle.id), await stock(tea.id)]).toEqual([{ on_hand: 8, reserved: 0 }, { on_hand: 9, reserved: 0 }]);
    expect(mailsTo(email).some((m) => m.parsed.subject?.startsWith("Receipt"))).toBe(false);

    // --- WatchOrder through the edge (Connect server streaming over HTTP/1.1), before fulfilment.
    const seen: { status: OrderStatus; change?: OrderStatus; payment: OrderPaymentStatus }[] = [];
    let watchError: unknown;
    const watching = (async () => {
      try {
        for await (const m of orders.watchOrder({ orderId: order.id }, bearer(token))) seen.push({ status: m.order!.status, change: m.change?.status, payment: m.order!.paymentStatus });
      } catch (error) {
        watchError = error;
      }
    })();
    await eventually(async () => (seen.length > 0 ? true : undefined), 10_000, "WatchOrder's first message");
    expect(seen[0]).toEqual({ status: OrderStatus.CONFIRMED, change: undefined, payment: OrderPaymentStatus.AUTHORIZED });

    // --- The back office ships: shipment.created captures the payment and ships the order.
    const { shipment } = await shipping.createShipment(
      {
        orderId: order.id,
        methodId: shippingMethod!.id,
        items: order.items.map((i) => ({ orderItemId: i.id, quantity: i.quantity })),
        weightGrams: 2 * 800 + 200,
        idempotencyKey: `ship-${order.id}`,
      },
      bearer(admin),
    );
    expect(shipment!.trackingNumber).toMatch(/^SBX\d{12}$/);
    const shipped = await eventually(async () => {
      const { order: o } = await orders.getOrder({ orderId: order.id }, bearer(token));
      return o!.status === OrderStatus.SHIPPED ? o! : undefined;
    }, 20_000, "order shipped");
    expect(shipped).toMatchObject({ paymentStatus: OrderPaymentStatus.PAID, trackingNumber: shipment!.trackingNumber });
    expect((await payments()).map((p) => p.status)).toEqual(["succeeded"]);
    const receipt = await mailWith(email, `Receipt for ${order.orderNumber}`);
    expect(receipt.parsed.text).toContain(`We received ${euros(total)} for order ${order.orderNumber}.`);
    const onItsWay = await mailWith(email, `Your order ${order.orderNumber} is on its way`);
    expect(onItsWay.parsed.text).toContain("left with Sandbox Parcel");
    expect(onItsWay.parsed.text).toContain(`Tracking number: ${shipment!.trackingNumber}`);
    expect(onItsWay.parsed.html).toContain(`href="https://track.example.com/sandbox/${shipment!.trackingNumber}"`);

    // --- The carrier reports through the edge's webhook route (signed with the sandbox key).
    const start = Date.now();
    const report = async (status: string, minute: number, outcome = "WEBHOOK_OUTCOME_APPLIED") => {
      const body = JSON.stringify({ id: `evt-${status}-${stamp}`, tracking_number: shipment!.trackingNumber, status, location: "Berlin, DE", occurred_at: new Date(start + minute * 1000).toISOString() });
      const res = await fetch(`${edge.url}/webhooks/carriers/sandbox`, {
        method: "POST",
        headers: { "content-type": "application/json", "carrier-signature": signWebhook(body, developmentSandboxWebhookSecret) },
        body,
      });
      expect([res.status, ((await res.json()) as { outcome: string }).outcome]).toEqual([200, outcome]);
    };
    await report("in_transit", 1);
    await report("out_for_delivery", 2);
    await report("delivered", 3);
    expect((await shipping.adminGetShipment({ id: shipment!.id }, bearer(admin))).shipment!.status).toBe(ShipmentStatus.DELIVERED);
    const delivered = await mailWith(email, `Your order ${order.orderNumber} was delivered`);
    expect(delivered.parsed.text).toContain(`Order ${order.orderNumber} was delivered.`);
    // The carrier sends its last report again: acknowledged as a duplicate, nothing happens twice.
    await report("delivered", 3, "WEBHOOK_OUTCOME_DUPLICATE");

    // --- WatchOrder ended by itself at DELIVERED (terminal: DELIVERED, CANCELLED, REFUNDED, PAYMENT_FAILED), having seen each step in order.
    await watching;
    expect(watchError).toBeUndefined();
    // One message per status change (services/order/watch.test.ts: also when one poll finds several), in order.
    expect(seen.flatMap((s) => (s.change ? [s.change] : []))).toEqual([OrderStatus.SHIPPED, OrderStatus.DELIVERED]);
    expect(seen.at(-1)).toMatchObject({ status: OrderStatus.DELIVERED, change: OrderStatus.DELIVERED, payment: OrderPaymentStatus.PAID });
    const { order: final } = await orders.getOrder({ orderId: order.id }, bearer(token));
    expect(final!.statusHistory.map((h) => h.status)).toEqual([OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED]);

    // --- The buyer's review is a verified purchase; a stranger's is not.
    const reviews = createClient(ReviewService, viaEdge());
    const { review } = await reviews.createReview({ productId: kettle.id, rating: 5, title: "boils fast", comment: "and quietly" }, bearer(token));
    expect(review!.isVerifiedPurchase).toBe(true);
    const stranger = (await auth.register({ email: `checkout-stranger-${stamp}@example.test`, password })).tokens!.accessToken;
    const { review: other } = await reviews.createReview({ productId: kettle.id, rating: 3, title: "looks nice" }, bearer(stranger));
    expect(other!.isVerifiedPurchase).toBe(false);

    // --- Every mail once: wait until Notification has handled every event so far, then count per subject.
    for (const file of [file_ecommerce_auth_v1_events, file_ecommerce_order_v1_events, file_ecommerce_payment_v1_events, file_ecommerce_shipping_v1_events]) {
      await consumedByNotification(streamOf(file).name);
    }
    await eventually(async () => {
      const pending = await sqlOf(mesh.services.notification!.ctx.orm.em.fork()).all("select id from notifications where user_id = $1 and status = 'pending'", [userId]);
      return pending.length === 0 ? true : undefined;
    }, 20_000, "no mail left to send");
    const counts: Record<string, number> = {};
    for (const m of mailsTo(email)) counts[m.parsed.subject ?? ""] = (counts[m.parsed.subject ?? ""] ?? 0) + 1;
    const welcome = Object.keys(counts).find((s) => s.startsWith("Welcome"));
    expect(welcome).toBeDefined();
    expect(counts).toEqual({
      [welcome!]: 1,
      "Confirm your email address": 1,
      "Your email address is confirmed": 1,
      [`Your order ${order.orderNumber}`]: 1,
      [`Receipt for ${order.orderNumber}`]: 1,
      [`Your order ${order.orderNumber} is on its way`]: 1,
      [`Your order ${order.orderNumber} was delivered`]: 1,
    });

    // The in-app inbox (through the edge) holds one copy of each order, payment and shipping notification.
    const inbox = await createClient(NotificationService, viaEdge()).listMyNotifications({ channel: NotificationChannel.IN_APP, pageSize: 50 }, bearer(token));
    const inApp = inbox.notifications.map((n) => n.templateName).filter((t) => t.startsWith("order_") || t.startsWith("payment_")).sort();
    expect(inApp).toEqual(["order_confirmation", "order_delivered", "order_shipped", "payment_receipt"]);
    expect(inbox.notifications.find((n) => n.templateName === "order_confirmation")!.metadata).toMatchObject({ order_id: order.id });

    // Nothing more can happen to a delivered order: the customer cannot cancel it.
    const cancel = await orders.cancelOrder({ orderId: order.id }, bearer(token)).catch((e: unknown) => ConnectError.from(e));
    expect(cancel).toMatchObject({ code: Code.FailedPrecondition });
    expect(errorReason(cancel)).toBe("ORDER_NOT_CANCELLABLE");
  });
});
