/**
 * Shipments and tracking through the contract, against real servers
 * (Shipping, a kit-built stand-in of Order's GetOrderInternal), PostgreSQL and
 * a private nats-server: partial shipments within the ordered quantities,
 * idempotent creation, one ordered timeline from reports out of order and
 * duplicated, final statuses, signed carrier webhooks, the public tracking
 * view, customer and admin views, and the events on SHIPPING_EVENTS.
 */
import { toJsonString } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { ShipmentCreatedSchema, ShipmentDeliveredSchema, ShipmentStatusChangedSchema } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import { ShipmentStatus, TrackedShipmentSchema, WebhookOutcome } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { signWebhook } from "../../kit/webhooks.ts";
import { developmentSandboxWebhookSecret } from "./config.ts";
import { auth, carrierWithMethod, customerToken, failure, orderOf, type ShippingHarness, startShippingHarness } from "./testing.ts";

let h: ShippingHarness;
let methodId: string;
const customerId = uuidv7();
let customer: string;

beforeAll(async () => {
  h = await startShippingHarness();
  // The carrier code "sandbox" selects the built-in provider and its webhook key.
  ({
    method: { id: methodId },
  } = await carrierWithMethod(h, "sandbox"));
  customer = await customerToken(h, customerId);
});

afterAll(async () => {
  await h?.stop();
});

let keys = 0;
const key = () => `ship-key-${++keys}-${Date.now()}`;

const ship = (orderId: string, items: { orderItemId: string; quantity: number }[], init: Record<string, unknown> = {}) =>
  h.shipping.createShipment({ orderId, items, methodId, weightGrams: 1200, idempotencyKey: key(), ...init }, auth(h.admin));

/** Reports happen after the label (created now): minutes from now, within the 5 minutes of clock skew allowed. */
const start = Date.now();
const at = (minute: number) => timestampFromDate(new Date(start + minute * 60_000));

describe("CreateShipment", () => {
  it("ships an order in several parcels, never more units than ordered, with sandbox tracking numbers", async () => {
    const order = orderOf(h, customerId, [3, 1]);
    const [a, b] = order.items;
    const { shipment: first } = await ship(order.id, [{ orderItemId: a!.id, quantity: 2 }]);
    expect(first!.status).toBe(ShipmentStatus.LABEL_CREATED);
    expect(first!.trackingNumber).toMatch(/^SBX\d{12}$/);
    expect(first!.trackingUrl).toBe(`https://track.example.com/sandbox/${first!.trackingNumber}`);
    expect(first!.userId).toBe(customerId);
    expect(first!.cost!.amountMinor).toBe(400n);
    expect(first!.shipTo!.countryCode).toBe("DE");

    const over = await failure(ship(order.id, [{ orderItemId: b!.id, quantity: 1 }, { orderItemId: a!.id, quantity: 2 }]));
    expect([over.code, over.reason, over.field, over.metadata]).toEqual([Code.FailedPrecondition, "QUANTITY_EXCEEDS_UNSHIPPED", "items[1]", { order_item_id: a!.id, unshipped: "1" }]);

    const { shipment: second } = await ship(order.id, [{ orderItemId: b!.id, quantity: 1 }, { orderItemId: a!.id, quantity: 1 }]);
    expect(second!.trackingNumber).not.toBe(first!.trackingNumber);
    const mine = await h.shipping.listShipmentsForOrder({ orderId: order.id }, auth(customer));
    expect(mine.shipments.map((s) => s.id)).toEqual([first!.id, second!.id]);
    expect(mine.shipments[0]!.cost).toBeUndefined();
    expect((await h.shipping.listShipmentsForOrder({ orderId: order.id }, auth(h.customer))).shipments).toEqual([]);

    const created = await eventually(async () => {
      const events = await eventsOnStream(h.nc, "SHIPPING_EVENTS", ShipmentCreatedSchema);
      const ours = events.filter((e) => e.orderId === order.id);
      return ours.length === 2 ? ours : undefined;
    });
    expect(created.map((e) => [e.shipmentId, e.trackingNumber, e.status])).toEqual([
      [first!.id, first!.trackingNumber, ShipmentStatus.LABEL_CREATED],
      [second!.id, second!.trackingNumber, ShipmentStatus.LABEL_CREATED],
    ]);
  });

  it("returns the first shipment for a retried key and refuses the key for another request", async () => {
    const order = orderOf(h, customerId, [2]);
    const req = { orderId: order.id, items: [{ orderItemId: order.items[0]!.id, quantity: 1 }], methodId, weightGrams: 500, idempotencyKey: key() };
    const [one, two] = await Promise.all([h.shipping.createShipment(req, auth(h.admin)), h.shipping.createShipment(req, auth(h.admin))]);
    expect(two.shipment!.id).toBe(one.shipment!.id);
    const reused = await failure(h.shipping.createShipment({ ...req, weightGrams: 600 }, auth(h.admin)));
    expect([reused.code, reused.reason]).toEqual([Code.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"]);
    expect((await h.shipping.listShipments({ orderId: order.id }, auth(h.admin))).shipments).toHaveLength(1);
  });

  it("refuses unknown orders and lines, orders that cannot ship, taken tracking numbers, and non-admins", async () => {
    const missing = await failure(ship(uuidv7(), [{ orderItemId: uuidv7(), quantity: 1 }]));
    expect([missing.code, missing.reason]).toEqual([Code.NotFound, "ORDER_NOT_FOUND"]);
    const order = orderOf(h, customerId, [1]);
    const line = await failure(ship(order.id, [{ orderItemId: uuidv7(), quantity: 1 }]));
    expect([line.code, line.reason, line.field]).toEqual([Code.InvalidArgument, "ORDER_ITEM_NOT_FOUND", "items[0]"]);
    const pending = orderOf(h, customerId, [1], { status: OrderStatus.PENDING });
    const notShippable = await failure(ship(pending.id, [{ orderItemId: pending.items[0]!.id, quantity: 1 }]));
    expect([notShippable.code, notShippable.reason]).toEqual([Code.FailedPrecondition, "ORDER_NOT_SHIPPABLE"]);
    await ship(order.id, [{ orderItemId: order.items[0]!.id, quantity: 1 }], { trackingNumber: "COUNTER-0001" });
    const other = orderOf(h, customerId, [1]);
    const taken = await failure(ship(other.id, [{ orderItemId: other.items[0]!.id, quantity: 1 }], { trackingNumber: "COUNTER-0001" }));
    expect([taken.code, taken.reason]).toEqual([Code.AlreadyExists, "TRACKING_NUMBER_TAKEN"]);
    expect((await failure(h.shipping.createShipment({ orderId: other.id, items: [{ orderItemId: other.items[0]!.id, quantity: 1 }], weightGrams: 1, idempotencyKey: key() }, auth(customer)))).code).toBe(
      Code.PermissionDenied,
    );
    const bad = await failure(h.shipping.createShipment({ orderId: other.id, items: [], weightGrams: 0, idempotencyKey: "short" }, auth(h.admin)));
    expect(bad.code).toBe(Code.InvalidArgument);
  });
});

describe("tracking", () => {
  it("reports out of order and duplicated give one ordered timeline; the status follows the newest and stops at DELIVERED", async () => {
    const order = orderOf(h, customerId, [1]);
    const { shipment } = await ship(order.id, [{ orderItemId: order.items[0]!.id, quantity: 1 }]);
    const report = (status: ShipmentStatus, minute: number, description: string) =>
      h.shipping.addTrackingEvent({ shipmentId: shipment!.id, status, description, location: "Leipzig hub, DE", occurredAt: at(minute) }, auth(h.admin));

    await report(ShipmentStatus.OUT_FOR_DELIVERY, 3, "Out for delivery");
    // Older, reported later: joins the timeline, the status stays.
    const late = await report(ShipmentStatus.IN_TRANSIT, 2, "Arrived at sorting facility");
    expect(late.shipment!.status).toBe(ShipmentStatus.OUT_FOR_DELIVERY);
    // The same report twice is one event.
    await report(ShipmentStatus.IN_TRANSIT, 2, "Arrived at sorting facility");
    const delivered = await report(ShipmentStatus.DELIVERED, 3.5, "Delivered");
    expect(delivered.shipment!.status).toBe(ShipmentStatus.DELIVERED);
    // Final: a later report is recorded but does not move the status.
    const after = await report(ShipmentStatus.EXCEPTION, 4, "Damaged");
    expect(after.shipment!.status).toBe(ShipmentStatus.DELIVERED);

    const timeline = after.shipment!.events.map((e) => [e.status, e.description]);
    expect(timeline.slice(1)).toEqual([
      [ShipmentStatus.IN_TRANSIT, "Arrived at sorting facility"],
      [ShipmentStatus.OUT_FOR_DELIVERY, "Out for delivery"],
      [ShipmentStatus.DELIVERED, "Delivered"],
      [ShipmentStatus.EXCEPTION, "Damaged"],
    ]);
    expect(timeline[0]![0]).toBe(ShipmentStatus.LABEL_CREATED);
    expect(after.shipment!.shippedAt).toEqual(at(2));
    expect(after.shipment!.deliveredAt).toEqual(at(3.5));

    const final = await failure(h.shipping.updateShipmentStatus({ id: shipment!.id, status: ShipmentStatus.RETURNED, reason: "Back to sender" }, auth(h.admin)));
    expect([final.code, final.reason]).toEqual([Code.FailedPrecondition, "SHIPMENT_FINAL"]);

    const changes = await eventually(async () => {
      const events = (await eventsOnStream(h.nc, "SHIPPING_EVENTS", ShipmentStatusChangedSchema)).filter((e) => e.shipmentId === shipment!.id);
      return events.length === 2 ? events : undefined;
    });
    expect(changes.map((e) => [e.fromStatus, e.toStatus])).toEqual([
      [ShipmentStatus.LABEL_CREATED, ShipmentStatus.OUT_FOR_DELIVERY],
      [ShipmentStatus.OUT_FOR_DELIVERY, ShipmentStatus.DELIVERED],
    ]);
    const deliveredEvents = await eventually(async () => {
      const events = (await eventsOnStream(h.nc, "SHIPPING_EVENTS", ShipmentDeliveredSchema)).filter((e) => e.shipmentId === shipment!.id);
      return events.length === 1 ? events : undefined;
    });
    expect(deliveredEvents[0]!.items.map((i) => i.orderItemId)).toEqual([order.items[0]!.id]);
  });

  it("refuses a report from the future and an unknown shipment", async () => {
    const order = orderOf(h, customerId, [1]);
    const { shipment } = await ship(order.id, [{ orderItemId: order.items[0]!.id, quantity: 1 }]);
    const future = await failure(
      h.shipping.addTrackingEvent({ shipmentId: shipment!.id, status: ShipmentStatus.IN_TRANSIT, description: "x", occurredAt: timestampFromDate(new Date(Date.now() + 3_600_000)) }, auth(h.admin)),
    );
    expect([future.code, future.field]).toEqual([Code.InvalidArgument, "occurred_at"]);
    const unknown = await failure(h.shipping.addTrackingEvent({ shipmentId: uuidv7(), status: ShipmentStatus.IN_TRANSIT, description: "x", occurredAt: at(1) }, auth(h.admin)));
    expect(unknown.code).toBe(Code.NotFound);
  });

  it("applies signed carrier webhooks once, refuses bad and stale signatures, and acknowledges unknown numbers", async () => {
    const order = orderOf(h, customerId, [1]);
    const { shipment } = await ship(order.id, [{ orderItemId: order.items[0]!.id, quantity: 1 }]);
    const body = Buffer.from(JSON.stringify({ id: `evt-${uuidv7()}`, tracking_number: shipment!.trackingNumber, status: "in_transit", location: "Berlin, DE", occurred_at: new Date().toISOString() }));
    const deliver = (payload: Buffer, signature: string) => h.shipping.handleCarrierWebhook({ carrierCode: "sandbox", payload, signature });

    const wrong = await failure(deliver(body, signWebhook(body, "not-the-sandbox-key-at-all-123")));
    expect([wrong.code, wrong.reason]).toEqual([Code.Unauthenticated, "INVALID_SIGNATURE"]);
    const stale = await failure(deliver(body, signWebhook(body, developmentSandboxWebhookSecret, Math.floor(Date.now() / 1000) - 301)));
    expect([stale.code, stale.reason]).toEqual([Code.Unauthenticated, "INVALID_SIGNATURE"]);
    const tampered = await failure(deliver(Buffer.concat([body, Buffer.from(" ")]), signWebhook(body, developmentSandboxWebhookSecret)));
    expect(tampered.reason).toBe("INVALID_SIGNATURE");
    expect((await h.shipping.adminGetShipment({ id: shipment!.id }, auth(h.admin))).shipment!.status).toBe(ShipmentStatus.LABEL_CREATED);

    // During a rotation the carrier signs with the old and the new key: one known v1 is enough.
    const t = Math.floor(Date.now() / 1000);
    const rotated = `${signWebhook(body, "the-carriers-new-key-we-do-not-know-yet", t)},v1=${signWebhook(body, developmentSandboxWebhookSecret, t).split("v1=")[1]}`;
    expect((await deliver(body, rotated)).outcome).toBe(WebhookOutcome.APPLIED);
    expect((await deliver(body, signWebhook(body, developmentSandboxWebhookSecret))).outcome).toBe(WebhookOutcome.DUPLICATE);
    const { shipment: after } = await h.shipping.adminGetShipment({ id: shipment!.id }, auth(h.admin));
    expect(after!.status).toBe(ShipmentStatus.IN_TRANSIT);
    expect(after!.events.filter((e) => e.status === ShipmentStatus.IN_TRANSIT)).toHaveLength(1);

    const stranger = Buffer.from(JSON.stringify({ id: `evt-${uuidv7()}`, tracking_number: "SBX000000000000", status: "delivered", occurred_at: new Date().toISOString() }));
    expect((await deliver(stranger, signWebhook(stranger, developmentSandboxWebhookSecret))).outcome).toBe(WebhookOutcome.IGNORED);
    const junk = Buffer.from("not json");
    expect((await failure(deliver(junk, signWebhook(junk, developmentSandboxWebhookSecret)))).reason).toBe("MALFORMED_PAYLOAD");
    expect((await failure(h.shipping.handleCarrierWebhook({ carrierCode: "nobody", payload: body, signature: "t=1,v1=00" }))).code).toBe(Code.NotFound);
  });

  it("TrackShipment shows the status and timeline without personal data; GetShipment only to the order's customer", async () => {
    const order = orderOf(h, customerId, [1]);
    const { shipment } = await ship(order.id, [{ orderItemId: order.items[0]!.id, quantity: 1 }]);
    const { shipment: tracked } = await h.shipping.trackShipment({ trackingNumber: shipment!.trackingNumber });
    expect([tracked!.status, tracked!.destinationCountryCode, tracked!.carrierCode, tracked!.events.length]).toEqual([ShipmentStatus.LABEL_CREATED, "DE", "sandbox", 1]);
    expect(toJsonString(TrackedShipmentSchema, tracked!)).not.toContain("Lovelace");
    expect((await failure(h.shipping.trackShipment({ trackingNumber: "SBX999999999999" }))).code).toBe(Code.NotFound);

    expect((await h.shipping.getShipment({ id: shipment!.id }, auth(customer))).shipment!.cost).toBeUndefined();
    expect((await failure(h.shipping.getShipment({ id: shipment!.id }, auth(h.customer)))).code).toBe(Code.NotFound);
  });
});
