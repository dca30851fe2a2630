/**
 * Order, payment and shipment mails from the events of those services'
 * contracts, published onto their streams the way their outbox relays do
 * (the Order service is being built elsewhere: a stand-in answers
 * GetOrderInternal), and from the real Payment service (sandbox provider).
 * A real SMTP peer receives the mail.
 */
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_ecommerce_auth_v1_events, UserRegisteredSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { NotificationChannel, NotificationService, NotificationType } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { file_ecommerce_order_v1_events, OrderCancelledSchema, OrderCreatedSchema, OrderDeliveredSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import { type Order, OrderSchema, OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { file_ecommerce_payment_v1_events, PaymentFailedSchema, PaymentRefundedSchema, PaymentSucceededSchema } from "../../gen/ecommerce/payment/v1/events_pb.js";
import { file_ecommerce_shipping_v1_events, ShipmentCreatedSchema, ShipmentStatusChangedSchema } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import { ShipmentStatus } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { CartAbandonedSchema, file_ecommerce_cart_v1_events } from "../../gen/ecommerce/cart/v1/events_pb.js";
import { file_ecommerce_returns_v1_events, ReturnApprovedSchema, ReturnRefundedSchema, ReturnRequestedSchema } from "../../gen/ecommerce/returns/v1/events_pb.js";
import { notFound } from "../../kit/errors.ts";
import { streamOf, subjectOf } from "../../kit/events/contracts.ts";
import { money } from "../../kit/money.ts";
import { defineService } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { startEdge } from "../../gateway/edge.ts";
import { freePort } from "../../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { formatMoney } from "./commerce.ts";
import { PaymentService, RefundReason } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { paymentService } from "../payment/service.ts";
import { notificationService } from "./service.ts";
import { rawHeader, SmtpPeer } from "./testing.ts";

const issuer = new TestIssuer();
const storefront = "https://shop.example";
const orders = new Map<string, Order>();
let orderCalls = 0;
let mesh: TestMesh;
let edge: Awaited<ReturnType<typeof startEdge>> | undefined;
let smtp: SmtpPeer;
let nc: NatsConnection;
let js: JetStreamClient;
let notifications: ReturnType<typeof createClient<typeof NotificationService>>;

const eur = (minor: bigint) => money(minor, "EUR");
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** Stand-in of the Order service's GetOrderInternal. */
const orderStandIn = defineService({
  name: "order",
  entities: [],
  migrations: [],
  routes(router) {
    router.service(OrderService, {
      getOrderInternal: (req) => {
        orderCalls++;
        const order = orders.get(req.orderId);
        if (!order) throw notFound("order", req.orderId);
        return { order };
      },
    });
  },
});

async function publish<D extends DescMessage>(schema: D, init: Omit<MessageInitShape<D>, "eventId" | "occurredAt">, msgId?: string) {
  const eventId = uuidv7();
  const payload = toBinary(schema, create(schema, { ...init, eventId, occurredAt: timestampFromDate(new Date()) } as unknown as MessageInitShape<D>));
  await js.publish(subjectOf(schema), payload, { msgID: msgId ?? eventId });
  return { eventId, payload };
}

async function customer(language = "en-GB") {
  const userId = uuidv7();
  const email = `${userId}@shop.test`;
  await publish(UserRegisteredSchema, { userId, email, firstName: "Ada", lastName: "L", preferredLanguage: language, roles: ["customer"] });
  await eventually(async () => (smtp.to(email).length > 0 ? true : undefined), 20_000, "welcome mail");
  return { userId, email };
}

const mailWith = (email: string, subject: string) =>
  eventually(async () => smtp.to(email).find((m) => m.parsed.subject === subject), 20_000, `mail "${subject}"`);

async function consumed(stream: string) {
  await eventually(async () => {
    const info = await (await js.jetstreamManager()).consumers.info(stream, `notification_${stream}`);
    return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
  }, 20_000, `${stream} consumed`);
}

beforeAll(async () => {
  smtp = new SmtpPeer();
  await smtp.start(0);
  // The one-click unsubscribe link of the mail is the edge's (it makes the POST an Unsubscribe call).
  const edgePort = await freePort();
  mesh = await startMesh([issuer.trustedBy(orderStandIn), issuer.trustedBy(paymentService), issuer.trustedBy(notificationService)], {
    SMTP_PORT: String(smtp.port),
    SMTP_TLS: "off",
    STOREFRONT_URL: storefront,
    NOTIFICATION_PUBLIC_URL: `http://127.0.0.1:${edgePort}`,
    NOTIFICATION_DELIVERY_EVERY_MS: "100",
  });
  edge = await startEdge({ port: edgePort, upstreams: { notification: mesh.url("notification") }, logLevel: process.env.TEST_LOG_LEVEL ?? "silent" });
  nc = await natsConnect({ servers: mesh.nats.url });
  js = jetstream(nc);
  const jsm = await js.jetstreamManager();
  for (const file of [file_ecommerce_auth_v1_events, file_ecommerce_order_v1_events, file_ecommerce_payment_v1_events, file_ecommerce_shipping_v1_events, file_ecommerce_returns_v1_events, file_ecommerce_cart_v1_events]) {
    const s = streamOf(file);
    await jsm.streams.add({ name: s.name, subjects: s.subjects }).catch(() => undefined);
  }
  notifications = createClient(NotificationService, createGrpcTransport({ baseUrl: mesh.url("notification") }));
});

afterAll(async () => {
  await edge?.stop();
  await nc?.close();
  await mesh?.stop();
  await smtp?.stop();
});

describe("order, payment and shipment mails", () => {
  it("formats money from minor units exactly, in the recipient's locale", () => {
    expect(formatMoney(eur(123456n))).toBe("€1,234.56");
    expect(formatMoney(eur(5n))).toBe("€0.05");
    expect(formatMoney(money(1500n, "JPY"))).toBe("¥1,500");
    expect(formatMoney(eur(123456n), "de-DE")).toBe("1.234,56\u00a0€");
  });

  it("order.created -> one confirmation with lines, discount, shipping, tax and total, even when redelivered", async () => {
    const { userId, email } = await customer();
    const orderId = uuidv7();
    const { payload } = await publish(OrderCreatedSchema, {
      orderId,
      orderNumber: "ORD-2026-000001",
      userId,
      items: [
        { productName: "Blue mug", variantName: "Large", quantity: 2, unitPrice: eur(1000n), totalPrice: eur(2000n) },
        { productName: "Tea", quantity: 1, unitPrice: eur(450n), totalPrice: eur(450n) },
      ],
      subtotal: eur(2450n),
      discountAmount: eur(245n),
      shippingAmount: eur(490n),
      taxAmount: eur(380n),
      totalAmount: eur(2695n),
      currencyCode: "EUR",
    });
    const mail = await mailWith(email, "Your order ORD-2026-000001");
    expect(mail.parsed.text).toContain("- 2 × Blue mug (Large): €20.00");
    expect(mail.parsed.text).toContain("- 1 × Tea: €4.50");
    expect(mail.parsed.text).toContain("Discount -€2.45");
    expect(mail.parsed.text).toContain("Shipping €4.90");
    expect(mail.parsed.text).toContain("Tax €3.80");
    expect(mail.parsed.text).toContain("Total €26.95");
    expect(mail.parsed.text).toContain(`${storefront}/orders/${orderId}`);
    expect(mail.parsed.html).toContain("<td>Blue mug (Large)</td>");
    await js.publish("order.created", payload, { msgID: uuidv7() });
    await consumed("ORDER_EVENTS");
    await eventually(async () => {
      const rows = await sqlOf(mesh.services.notification!.ctx.orm.em.fork()).all<{ status: string }>("select status from notifications where user_id = $1 and status = 'pending'", [userId]);
      return rows.length === 0 ? true : undefined;
    });
    expect(smtp.to(email).filter((m) => m.parsed.subject === "Your order ORD-2026-000001")).toHaveLength(1);
    // The in-app copy links to the order.
    const token = await issuer.user(userId);
    const inbox = await notifications.listMyNotifications({ channel: NotificationChannel.IN_APP, type: NotificationType.ORDER_UPDATES }, bearer(token));
    expect(inbox.notifications[0]?.metadata).toMatchObject({ order_id: orderId });
  });

  it("shipment.created -> order_shipped with the tracking link; the order number comes from order.created, else from Order (GetOrderInternal)", async () => {
    const { userId, email } = await customer();
    const known = uuidv7();
    await publish(OrderCreatedSchema, { orderId: known, orderNumber: "ORD-KNOWN", userId, subtotal: eur(100n), totalAmount: eur(100n), currencyCode: "EUR" });
    await mailWith(email, "Your order ORD-KNOWN");
    const before = orderCalls;
    await publish(ShipmentCreatedSchema, { shipmentId: uuidv7(), orderId: known, userId, carrierName: "DHL", trackingNumber: "JD001", trackingUrl: "https://track.example/JD001", status: ShipmentStatus.LABEL_CREATED });
    const shipped = await mailWith(email, "Your order ORD-KNOWN is on its way");
    expect(shipped.parsed.text).toContain("left with DHL");
    expect(shipped.parsed.html).toContain('href="https://track.example/JD001"');
    expect(orderCalls).toBe(before);

    const unknown = uuidv7();
    orders.set(unknown, create(OrderSchema, { id: unknown, orderNumber: "ORD-ASKED", userId }));
    await publish(ShipmentCreatedSchema, { shipmentId: uuidv7(), orderId: unknown, userId, carrierCode: "ups", trackingNumber: "1Z9", trackingUrl: "", status: ShipmentStatus.LABEL_CREATED });
    const asked = await mailWith(email, "Your order ORD-ASKED is on its way");
    expect(asked.parsed.text).toContain("left with ups");
    expect(orderCalls).toBe(before + 1);
  });

  it("payment receipt, payment failure, partial and full refunds; a return's refund is left to return.refunded", async () => {
    const { userId, email } = await customer();
    const orderId = uuidv7();
    await publish(PaymentSucceededSchema, { paymentId: uuidv7(), orderId, orderNumber: "ORD-PAY", userId, amountCaptured: eur(4999n), provider: "sandbox" });
    expect((await mailWith(email, "Receipt for ORD-PAY")).parsed.text).toContain("We received €49.99 for order ORD-PAY.");
    await publish(PaymentFailedSchema, { paymentId: uuidv7(), orderId, orderNumber: "ORD-PAY", userId, amount: eur(4999n), failureMessage: "card declined" });
    expect((await mailWith(email, "Payment for ORD-PAY failed")).parsed.text).toContain("(card declined)");
    await publish(PaymentRefundedSchema, { refundId: uuidv7(), paymentId: uuidv7(), orderId, orderNumber: "ORD-PAY", userId, amount: eur(1000n), fullyRefunded: false });
    expect((await mailWith(email, "Refund of €10.00 for ORD-PAY")).parsed.text).toContain("part of your payment");
    await publish(PaymentRefundedSchema, { refundId: uuidv7(), paymentId: uuidv7(), orderId, orderNumber: "ORD-PAY", userId, amount: eur(100n), fullyRefunded: false, returnRequestId: uuidv7() });
    await publish(PaymentRefundedSchema, { refundId: uuidv7(), paymentId: uuidv7(), orderId, orderNumber: "ORD-PAY", userId, amount: eur(3999n), fullyRefunded: true });
    expect((await mailWith(email, "Refund of €39.99 for ORD-PAY")).parsed.text).toContain("the full amount");
    await consumed("PAYMENT_EVENTS");
    expect(smtp.to(email).some((m) => m.parsed.subject === "Refund of €1.00 for ORD-PAY")).toBe(false);
  });

  it("cancellation, delivery and shipment exceptions; an ORDER_UPDATES email opt-out still leaves the in-app copy", async () => {
    const { userId, email } = await customer();
    const orderId = uuidv7();
    await publish(OrderCancelledSchema, { orderId, orderNumber: "ORD-X", userId, reason: "out of stock" });
    expect((await mailWith(email, "Your order ORD-X was cancelled")).parsed.text).toContain("Reason: out of stock.");
    await publish(ShipmentStatusChangedSchema, { shipmentId: uuidv7(), orderId, userId, trackingNumber: "JD9", fromStatus: ShipmentStatus.IN_TRANSIT, toStatus: ShipmentStatus.OUT_FOR_DELIVERY });
    await publish(ShipmentStatusChangedSchema, { shipmentId: uuidv7(), orderId, userId, trackingNumber: "JD9", fromStatus: ShipmentStatus.IN_TRANSIT, toStatus: ShipmentStatus.EXCEPTION, description: "address not found" });
    expect((await mailWith(email, "A problem with your parcel JD9")).parsed.text).toContain("address not found");

    const token = await issuer.user(userId);
    await notifications.updateNotificationPreferences({ preferences: [{ type: NotificationType.ORDER_UPDATES, emailEnabled: false, inAppEnabled: true, pushEnabled: true }] }, bearer(token));
    const { eventId } = await publish(OrderDeliveredSchema, { orderId, orderNumber: "ORD-X", userId });
    const inApp = await eventually(async () => {
      const r = await notifications.listMyNotifications({ type: NotificationType.ORDER_UPDATES }, bearer(token));
      const delivered = r.notifications.filter((n) => n.templateName === "order_delivered");
      return delivered.length >= 2 ? delivered : undefined;
    });
    expect(inApp.map((n) => n.channel).sort()).toEqual([NotificationChannel.PUSH, NotificationChannel.IN_APP].sort());
    // The push went through the sandbox provider, which records it.
    await eventually(async () => {
      const rows = await sqlOf(mesh.services.notification!.ctx.orm.em.fork()).all<{ provider: string }>(
        "select l.provider from notification_logs l join notifications n on n.id = l.notification_id where n.idempotency_key = $1 and l.status = 'sent'",
        [`${eventId}-push`],
      );
      return rows[0]?.provider === "sandbox-push" ? true : undefined;
    });
    await consumed("ORDER_EVENTS");
    expect(smtp.to(email).some((m) => m.parsed.subject === "Your order ORD-X was delivered")).toBe(false);
  });

  it("the real Payment service's payment.succeeded and payment.refunded become a receipt and a refund mail", async () => {
    const { userId, email } = await customer();
    const payments = createClient(PaymentService, createGrpcTransport({ baseUrl: mesh.url("payment") }));
    const order = bearer(await issuer.service("order"));
    const authorized = await payments.authorizePayment(
      {
        orderId: uuidv7(),
        orderNumber: "ORD-REAL-1",
        userId,
        amount: eur(2590n),
        source: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_success" } },
        idempotencyKey: `pay-${uuidv7()}`,
      },
      order,
    );
    await payments.capturePayment({ paymentId: authorized.payment!.id }, order);
    expect((await mailWith(email, "Receipt for ORD-REAL-1")).parsed.text).toContain("We received €25.90 for order ORD-REAL-1.");
    await payments.refundPayment({ paymentId: authorized.payment!.id, amount: eur(590n), reason: RefundReason.GOODWILL, idempotencyKey: `ref-${uuidv7()}` }, bearer(await issuer.service("returns")));
    expect((await mailWith(email, "Refund of €5.90 for ORD-REAL-1")).parsed.text).toContain("part of your payment");
  });

  it("a return's steps are mailed (requested, approved with the expected refund, refunded)", async () => {
    const { userId, email } = await customer();
    const base = { returnId: uuidv7(), rmaNumber: "RMA-2026-000007", orderId: uuidv7(), userId };
    await publish(ReturnRequestedSchema, base);
    await mailWith(email, "We received your return request RMA-2026-000007");
    await publish(ReturnApprovedSchema, { ...base, totalRefundAmount: eur(1999n) });
    expect((await mailWith(email, "Your return RMA-2026-000007 is approved")).parsed.text).toContain("Expected refund: €19.99.");
    await publish(ReturnRefundedSchema, { ...base, refundId: uuidv7(), amount: eur(1999n), fullyRefunded: true });
    await mailWith(email, "Refund of €19.99 for return RMA-2026-000007");
  });

  it("abandoned-cart mail (MARKETING) only after an opt-in, with a one-click unsubscribe that stops the next one", async () => {
    const { userId, email } = await customer();
    const abandoned = () =>
      publish(CartAbandonedSchema, { cartId: uuidv7(), userId, currencyCode: "EUR", items: [{ productName: "Blue mug", quantity: 1, lineTotal: eur(1000n) }], itemCount: 1, total: eur(1000n) });
    const first = await abandoned();
    await consumed("CART_EVENTS");
    const sql = (q: string, p: unknown[]) => sqlOf(mesh.services.notification!.ctx.orm.em.fork()).all<{ id: string }>(q, p);
    expect(await sql("select id from notifications where idempotency_key like $1", [`${first.eventId}-%`])).toEqual([]);
    const token = await issuer.user(userId);
    await notifications.updateNotificationPreferences({ preferences: [{ type: NotificationType.MARKETING, emailEnabled: true }] }, bearer(token));
    await abandoned();
    const mail = await mailWith(email, "You left something in your cart, Ada");
    expect(mail.parsed.text).toContain("- 1 × Blue mug: €10.00");
    const link = rawHeader(mail.raw, "List-Unsubscribe")!.slice(1, -1);
    expect(link).toContain(".marketing.email.");
    expect((await fetch(link, { method: "POST", body: "List-Unsubscribe=One-Click" })).status).toBe(200);
    const third = await abandoned();
    await consumed("CART_EVENTS");
    expect(await sql("select id from notifications where idempotency_key = $1", [`${third.eventId}-email`])).toEqual([]);
  });
});
