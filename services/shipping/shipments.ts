/**
 * Shipments: CreateShipment (partial shipments, never more units than the
 * order line has left unshipped, idempotent on its key), the views of
 * customers, admins and anyone with a tracking number, and tracking: every
 * report (AddTrackingEvent, UpdateShipmentStatus, a carrier webhook) goes
 * through `recordTracking`, which keeps one timeline ordered by occurrence,
 * ignores duplicates, and moves the status only to a report newer than the
 * one it comes from, never out of DELIVERED or RETURNED.
 */
import { create, fromJson, type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { type PostalAddress, PostalAddressSchema } from "../../gen/ecommerce/common/v1/address_pb.js";
import { OrderService, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { ShipmentCreatedSchema, ShipmentDeliveredSchema, ShipmentStatusChangedSchema } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import {
  type AddTrackingEventRequest,
  type CreateShipmentRequest,
  CreateShipmentRequestSchema,
  type HandleCarrierWebhookRequest,
  type ListShipmentsRequest,
  type Shipment,
  ShipmentItemSchema,
  ShipmentSchema,
  ShipmentStatus,
  type TrackedShipment,
  TrackedShipmentSchema,
  type TrackingEvent,
  TrackingEventSchema,
  WebhookOutcome,
} from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { dateOf, timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { alreadyExists, domainError, failedPrecondition, invalidArgument, notFound, unavailable } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { requestHash } from "../../kit/idempotency.ts";
import type { PeerClients } from "../../kit/clients.ts";
import { pageOf } from "../../kit/paging.ts";
import { sqlOf, uniqueViolation } from "../../kit/sql.ts";
import { transaction } from "../../kit/transaction.ts";
import { verifyWebhook } from "../../kit/webhooks.ts";
import type { ShippingConfig } from "./config.ts";
import { CarrierEntity, type CarrierRow, ShipmentEntity, ShipmentItemEntity, type ShipmentRow, ShippingMethodEntity, type ShippingMethodRow, TrackingEventEntity } from "./entities.ts";
import { shipmentStatuses, trackingUrlOf } from "./mapping.ts";
import type { CarrierProviders } from "./providers.ts";

const final = new Set(["delivered", "returned"]);
/** Statuses that mean the carrier has the parcel (they set shipped_at). */
const withCarrier = new Set(["in_transit", "out_for_delivery", "delivered"]);
const shippable = new Set([OrderStatus.CONFIRMED, OrderStatus.PROCESSING, OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED]);
/** Reports may be up to this far ahead of our clock (carriers' clocks drift). */
const maxClockSkewMs = 5 * 60_000;

interface Loaded {
  row: ShipmentRow;
  carrier: CarrierRow;
  method: ShippingMethodRow;
}

async function loadShipment(em: EntityManager, where: { id: string } | { trackingNumber: string }, lock = false): Promise<Loaded | undefined> {
  if (lock && "id" in where) await sqlOf(em).run("select 1 from shipments where id = $1 for update", [where.id]);
  const row = await em.findOne(ShipmentEntity, where, { refresh: lock });
  if (!row) return undefined;
  const [carrier, method] = await Promise.all([em.findOneOrFail(CarrierEntity, { id: row.carrierId }), em.findOneOrFail(ShippingMethodEntity, { id: row.methodId })]);
  return { row, carrier, method };
}

async function shipmentMessage(em: EntityManager, s: Loaded, view: { cost: boolean; events: boolean }): Promise<Shipment> {
  const { row, carrier, method } = s;
  const [items, events] = await Promise.all([
    em.find(ShipmentItemEntity, { shipmentId: row.id }, { orderBy: { orderItemId: "asc" } }),
    view.events ? timelineOf(em, row.id) : Promise.resolve([]),
  ]);
  return create(ShipmentSchema, {
    id: row.id,
    orderId: row.orderId,
    userId: row.userId,
    carrierId: carrier.id,
    carrierCode: carrier.code,
    carrierName: carrier.name,
    methodId: method.id,
    methodCode: method.code,
    methodName: method.name,
    trackingNumber: row.trackingNumber,
    trackingUrl: trackingUrlOf(carrier.trackingUrlTemplate, row.trackingNumber),
    status: shipmentStatuses.fromDb(row.status),
    shipTo: fromJson(PostalAddressSchema, row.shipTo as JsonObject),
    items: items.map((i) => create(ShipmentItemSchema, { id: i.id, orderItemId: i.orderItemId, quantity: i.quantity })),
    weightGrams: row.weightGrams,
    cost: view.cost && row.costMinor !== null && row.costMinor !== undefined ? { amountMinor: BigInt(row.costMinor), currencyCode: row.costCurrency ?? "" } : undefined,
    estimatedDelivery: timestampOf(row.estimatedDelivery),
    shippedAt: timestampOf(row.shippedAt),
    deliveredAt: timestampOf(row.deliveredAt),
    events,
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  });
}

/** The timeline, oldest first (ties by recording order). */
async function timelineOf(em: EntityManager, shipmentId: string): Promise<TrackingEvent[]> {
  const rows = await em.find(TrackingEventEntity, { shipmentId }, { orderBy: { occurredAt: "asc", id: "asc" } });
  return rows.map((e) =>
    create(TrackingEventSchema, { id: e.id, status: shipmentStatuses.fromDb(e.status), location: e.location, description: e.description, occurredAt: timestampOf(e.occurredAt) }),
  );
}

const shipmentNotFound = (id: string) => notFound("shipment", id);

// ---- CreateShipment

export async function createShipment(em: EntityManager, peers: PeerClients, providers: CarrierProviders, req: CreateShipmentRequest): Promise<{ shipment: Shipment }> {
  const hash = requestHash(CreateShipmentRequestSchema, create(CreateShipmentRequestSchema, { ...req, idempotencyKey: "" }));
  const replay = async (): Promise<{ shipment: Shipment } | undefined> => {
    const prior = await em.fork().findOne(ShipmentEntity, { idempotencyKey: req.idempotencyKey });
    if (!prior) return undefined;
    if (prior.requestHash !== hash) {
      throw failedPrecondition("idempotency_key was used for a different shipment request; use a new key for a new shipment", "IDEMPOTENCY_KEY_REUSED");
    }
    const loaded = (await loadShipment(em.fork(), { id: prior.id }))!;
    return { shipment: await shipmentMessage(em.fork(), loaded, { cost: true, events: true }) };
  };
  const earlier = await replay();
  if (earlier) return earlier;

  let order;
  try {
    order = (await peers.client(OrderService).getOrderInternal({ orderId: req.orderId })).order!;
  } catch (error) {
    const e = ConnectError.from(error);
    if (e.code === Code.NotFound) throw domainError(Code.NotFound, `order ${req.orderId} not found`, { reason: "ORDER_NOT_FOUND", resource: { type: "order", name: req.orderId } });
    throw unavailable(`the Order service cannot be reached (${e.rawMessage}); retry with the same idempotency_key`, "DEPENDENCY_UNAVAILABLE");
  }
  if (!shippable.has(order.status)) {
    throw failedPrecondition(`order ${order.id} is ${OrderStatus[order.status]}: only CONFIRMED, PROCESSING or SHIPPED orders ship`, "ORDER_NOT_SHIPPABLE", {
      status: OrderStatus[order.status] ?? String(order.status),
    });
  }
  const ordered = new Map(order.items.map((i) => [i.id, i.quantity]));
  req.items.forEach((item, i) => {
    if (!ordered.has(item.orderItemId)) {
      throw domainError(Code.InvalidArgument, `items[${i}]: order item ${item.orderItemId} is not part of order ${order.id}`, { field: `items[${i}]`, reason: "ORDER_ITEM_NOT_FOUND" });
    }
  });
  const methodId = req.methodId || order.shippingMethod?.id || "";
  const method = methodId ? await em.findOne(ShippingMethodEntity, { id: methodId }) : null;
  if (!method) throw domainError(Code.NotFound, `shipping method ${methodId || "(none on the order)"} not found`, { reason: "SHIPPING_METHOD_NOT_FOUND" });
  const carrier = await em.findOneOrFail(CarrierEntity, { id: method.carrierId });
  if (!method.isActive || !carrier.isActive) {
    throw failedPrecondition(`shipping method ${carrier.code}/${method.code} is inactive; choose an active method`, "SHIPPING_UNAVAILABLE", { method_id: method.id });
  }
  const shipTo: PostalAddress | undefined = req.shipTo ?? order.shippingAddress;
  if (!shipTo) throw invalidArgument("ship_to", "is required: the order has no shipping address");

  const shipmentId = uuidv7();
  // The label is bought outside the transaction: a carrier call must not hold row locks.
  const label = req.trackingNumber
    ? undefined
    : await providers(carrier.code).createLabel({ shipmentId, weightGrams: req.weightGrams, countryCode: shipTo.countryCode, maxDays: method.maxDays });
  const trackingNumber = req.trackingNumber || label!.trackingNumber;
  const now = new Date();
  const estimated = dateOf(req.estimatedDelivery) ?? label?.estimatedDelivery ?? new Date(now.getTime() + method.maxDays * 86_400_000);

  try {
    const done: { shipment: Shipment } | { replay: true } = await transaction(em, async (tx) => {
      const sql = sqlOf(tx);
      // One order's shipments are created one at a time, so two parcels cannot both take the last units.
      await sql.run("select pg_advisory_xact_lock(hashtextextended($1, 0))", [`shipment-order:${order.id}`]);
      // A concurrent call with the same key committed while this one waited: answer as its retry.
      if (await sql.one("select 1 from shipments where idempotency_key = $1", [req.idempotencyKey])) return { replay: true as const };
      const shippedRows = await sql.all<{ order_item_id: string; quantity: string }>(
        `select i.order_item_id, sum(i.quantity)::text as quantity from shipment_items i join shipments s on s.id = i.shipment_id
          where s.order_id = $1 and s.status <> 'returned' group by i.order_item_id`,
        [order.id],
      );
      const shipped = new Map(shippedRows.map((r) => [r.order_item_id, Number(r.quantity)]));
      req.items.forEach((item, i) => {
        const unshipped = ordered.get(item.orderItemId)! - (shipped.get(item.orderItemId) ?? 0);
        if (item.quantity > unshipped) {
          throw domainError(Code.FailedPrecondition, `items[${i}]: ${item.quantity} units asked, ${unshipped} of order item ${item.orderItemId} left to ship`, {
            field: `items[${i}]`,
            reason: "QUANTITY_EXCEEDS_UNSHIPPED",
            metadata: { order_item_id: item.orderItemId, unshipped: String(unshipped) },
          });
        }
      });
      const row = tx.create(ShipmentEntity, {
        id: shipmentId,
        orderId: order.id,
        userId: order.userId,
        carrierId: carrier.id,
        methodId: method.id,
        trackingNumber,
        status: "label_created",
        shipTo: toJson(PostalAddressSchema, shipTo) as Record<string, unknown>,
        weightGrams: req.weightGrams,
        costMinor: req.cost?.amountMinor ?? label?.costMinor ?? null,
        costCurrency: req.cost?.currencyCode ?? label?.currency ?? null,
        estimatedDelivery: estimated,
        shippedAt: null,
        deliveredAt: null,
        statusOccurredAt: now,
        idempotencyKey: req.idempotencyKey,
        requestHash: hash,
        createdAt: now,
        updatedAt: now,
      });
      await tx.flush();
      for (const item of req.items) tx.create(ShipmentItemEntity, { id: uuidv7(), shipmentId, orderItemId: item.orderItemId, quantity: item.quantity });
      tx.create(TrackingEventEntity, { id: uuidv7(), shipmentId, status: "label_created", location: "", description: "Label created", occurredAt: now, carrierEventId: null, createdAt: now });
      await tx.flush();
      const shipment = await shipmentMessage(tx, { row, carrier, method }, { cost: true, events: true });
      publishEvent(tx, ShipmentCreatedSchema, {
        shipmentId,
        orderId: order.id,
        userId: order.userId,
        carrierId: carrier.id,
        carrierCode: carrier.code,
        carrierName: carrier.name,
        methodName: method.name,
        trackingNumber,
        trackingUrl: shipment.trackingUrl,
        status: ShipmentStatus.LABEL_CREATED,
        items: shipment.items,
        shipTo,
        estimatedDelivery: shipment.estimatedDelivery,
      });
      await tx.flush();
      return { shipment };
    });
    return "replay" in done ? (await replay())! : done;
  } catch (error) {
    const constraint = uniqueViolation(error);
    if (constraint === "shipments_idempotency_key_unique") return (await replay())!;
    if (constraint === "shipments_tracking_number_unique") throw alreadyExists(`tracking number ${trackingNumber} is already used by another shipment`, "TRACKING_NUMBER_TAKEN", "tracking_number");
    throw error;
  }
}

// ---- reads

export async function getShipment(em: EntityManager, userId: string, id: string): Promise<{ shipment: Shipment }> {
  const s = await loadShipment(em, { id });
  // Someone else's shipment is "not found": its existence is not the caller's business.
  if (!s || s.row.userId !== userId) throw shipmentNotFound(id);
  return { shipment: await shipmentMessage(em, s, { cost: false, events: true }) };
}

export async function adminGetShipment(em: EntityManager, id: string): Promise<{ shipment: Shipment }> {
  const s = await loadShipment(em, { id });
  if (!s) throw shipmentNotFound(id);
  return { shipment: await shipmentMessage(em, s, { cost: true, events: true }) };
}

export async function listShipmentsForOrder(em: EntityManager, userId: string, orderId: string): Promise<{ shipments: Shipment[] }> {
  const rows = await em.find(ShipmentEntity, { orderId, userId }, { orderBy: { createdAt: "asc", id: "asc" } });
  const shipments: Shipment[] = [];
  for (const row of rows) shipments.push(await shipmentMessage(em, (await loadShipment(em, { id: row.id }))!, { cost: false, events: true }));
  return { shipments };
}

export async function listShipments(em: EntityManager, req: ListShipmentsRequest): Promise<{ shipments: Shipment[]; nextPageToken: string }> {
  const pages = pageOf(req, { c: "timestamptz", i: "uuid" });
  const rows = await sqlOf(em).all<{ id: string; created: string }>(
    `select id, created_at::text as created from shipments
      where ($1::uuid is null or order_id = $1::uuid) and ($2::uuid is null or user_id = $2::uuid)
        and (cardinality($3::text[]) = 0 or status = any($3::text[])) and ($4::uuid is null or carrier_id = $4::uuid)
        and ($5::text is null or tracking_number = $5::text)
        and ($6::timestamptz is null or created_at >= $6::timestamptz) and ($7::timestamptz is null or created_at < $7::timestamptz)
        and ($8::timestamptz is null or (created_at, id) < ($8::timestamptz, $9::uuid))
      order by created_at desc, id desc limit $10`,
    [
      req.orderId || null,
      req.userId || null,
      req.statuses.map((s) => shipmentStatuses.toDb(s)),
      req.carrierId || null,
      req.trackingNumber || null,
      dateOf(req.createdAfter) ?? null,
      dateOf(req.createdBefore) ?? null,
      pages.after?.c ?? null,
      pages.after?.i ?? null,
      pages.size + 1,
    ],
  );
  const page = rows.slice(0, pages.size);
  const shipments: Shipment[] = [];
  for (const r of page) shipments.push(await shipmentMessage(em, (await loadShipment(em, { id: r.id }))!, { cost: true, events: false }));
  const last = page.at(-1);
  return { shipments, nextPageToken: rows.length > pages.size && last ? pages.next({ c: last.created, i: last.id }) : "" };
}

export async function trackShipment(em: EntityManager, trackingNumber: string): Promise<{ shipment: TrackedShipment }> {
  const s = await loadShipment(em, { trackingNumber });
  if (!s) throw domainError(Code.NotFound, `no shipment has tracking number ${trackingNumber}; check the number on the label`, { reason: "SHIPMENT_NOT_FOUND" });
  const { row, carrier, method } = s;
  return {
    shipment: create(TrackedShipmentSchema, {
      trackingNumber: row.trackingNumber,
      carrierCode: carrier.code,
      carrierName: carrier.name,
      trackingUrl: trackingUrlOf(carrier.trackingUrlTemplate, row.trackingNumber),
      methodName: method.name,
      status: shipmentStatuses.fromDb(row.status),
      destinationCountryCode: String((row.shipTo as { countryCode?: string }).countryCode ?? ""),
      estimatedDelivery: timestampOf(row.estimatedDelivery),
      shippedAt: timestampOf(row.shippedAt),
      deliveredAt: timestampOf(row.deliveredAt),
      events: await timelineOf(em, row.id),
    }),
  };
}

// ---- tracking

interface Report {
  status: ShipmentStatus;
  location: string;
  description: string;
  occurredAt: Date;
  carrierEventId: string | null;
}

/**
 * Records a report on a shipment in one transaction under the shipment's row
 * lock; false when it was a duplicate (nothing changed).
 */
async function recordTracking(em: EntityManager, shipmentId: string, report: Report): Promise<{ applied: boolean; event?: TrackingEvent }> {
  return transaction(em, async (tx) => {
    const sql = sqlOf(tx);
    const s = await loadShipment(tx, { id: shipmentId }, true);
    if (!s) throw shipmentNotFound(shipmentId);
    const status = shipmentStatuses.toDb(report.status);
    const id = uuidv7();
    const inserted = await sql.run(
      `insert into tracking_events (id, shipment_id, status, location, description, occurred_at, carrier_event_id)
        values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing`,
      [id, shipmentId, status, report.location, report.description, report.occurredAt, report.carrierEventId],
    );
    if (inserted === 0) return { applied: false };
    const event = create(TrackingEventSchema, { id, status: report.status, location: report.location, description: report.description, occurredAt: timestampFromDate(report.occurredAt) });
    const { row, carrier } = s;
    const from = row.status;
    // An older report arriving late joins the timeline but does not move the status back.
    const newer = !row.statusOccurredAt || report.occurredAt.getTime() >= new Date(row.statusOccurredAt).getTime();
    const moves = !final.has(from) && newer && from !== status;
    if (withCarrier.has(status) && (!row.shippedAt || report.occurredAt < new Date(row.shippedAt))) row.shippedAt = report.occurredAt;
    if (moves) {
      row.status = status;
      row.statusOccurredAt = report.occurredAt;
      if (status === "delivered") row.deliveredAt = report.occurredAt;
    } else if (newer && !final.has(from)) {
      row.statusOccurredAt = report.occurredAt;
    }
    row.updatedAt = new Date();
    await tx.flush();
    if (moves) {
      const trackingUrl = trackingUrlOf(carrier.trackingUrlTemplate, row.trackingNumber);
      const common = { shipmentId, orderId: row.orderId, userId: row.userId, carrierCode: carrier.code, carrierName: carrier.name, trackingNumber: row.trackingNumber, trackingUrl };
      publishEvent(tx, ShipmentStatusChangedSchema, {
        ...common,
        fromStatus: shipmentStatuses.fromDb(from),
        toStatus: report.status,
        location: report.location,
        description: report.description,
        statusOccurredAt: event.occurredAt,
        estimatedDelivery: timestampOf(row.estimatedDelivery),
      });
      if (status === "delivered") {
        const items = await tx.find(ShipmentItemEntity, { shipmentId }, { orderBy: { orderItemId: "asc" } });
        publishEvent(tx, ShipmentDeliveredSchema, {
          ...common,
          items: items.map((i) => create(ShipmentItemSchema, { id: i.id, orderItemId: i.orderItemId, quantity: i.quantity })),
          deliveredAt: event.occurredAt,
          location: report.location,
        });
      }
      await tx.flush();
    }
    return { applied: true, event };
  });
}

export async function addTrackingEvent(em: EntityManager, req: AddTrackingEventRequest) {
  const occurredAt = dateOf(req.occurredAt)!;
  if (occurredAt.getTime() > Date.now() + maxClockSkewMs) throw invalidArgument("occurred_at", "is more than 5 minutes in the future; give the time it happened");
  const { event } = await recordTracking(em, req.shipmentId, { status: req.status, location: req.location, description: req.description, occurredAt, carrierEventId: null });
  const { shipment } = await adminGetShipment(em.fork(), req.shipmentId);
  // A duplicate returns the event recorded the first time.
  const recorded = event ?? shipment.events.find((e) => e.status === req.status && e.description === req.description && dateOf(e.occurredAt)!.getTime() === occurredAt.getTime());
  return { shipment, event: recorded };
}

export async function updateShipmentStatus(em: EntityManager, req: { id: string; status: ShipmentStatus; reason: string; location: string }) {
  const current = await em.findOne(ShipmentEntity, { id: req.id });
  if (!current) throw shipmentNotFound(req.id);
  if (final.has(current.status)) {
    throw failedPrecondition(`shipment ${req.id} is ${current.status.toUpperCase()}, a final status; it cannot change`, "SHIPMENT_FINAL", { status: current.status });
  }
  await recordTracking(em, req.id, { status: req.status, location: req.location, description: req.reason, occurredAt: new Date(), carrierEventId: null });
  return adminGetShipment(em.fork(), req.id);
}

export async function handleCarrierWebhook(em: EntityManager, config: ShippingConfig, providers: CarrierProviders, req: HandleCarrierWebhookRequest) {
  const carrier = await em.findOne(CarrierEntity, { code: req.carrierCode, isActive: true });
  if (!carrier) throw domainError(Code.NotFound, `no active carrier has code ${req.carrierCode}`, { reason: "CARRIER_NOT_FOUND" });
  verifyWebhook(req.signature, req.payload, config.webhookSecrets.get(carrier.code) ?? [], { toleranceSeconds: config.webhookToleranceSeconds });
  const report = providers(carrier.code).parseWebhook(req.payload);
  const carrierEventId = `${carrier.code}:${report.carrierEventId}`;
  const seen = await em.findOne(TrackingEventEntity, { carrierEventId });
  if (seen) return { outcome: WebhookOutcome.DUPLICATE, carrierEventId: report.carrierEventId };
  const shipment = await em.findOne(ShipmentEntity, { trackingNumber: report.trackingNumber, carrierId: carrier.id });
  // Unknown numbers are acknowledged so the carrier stops retrying.
  if (!shipment) return { outcome: WebhookOutcome.IGNORED, carrierEventId: report.carrierEventId };
  const { applied } = await recordTracking(em, shipment.id, { ...report, carrierEventId });
  return { outcome: applied ? WebhookOutcome.APPLIED : WebhookOutcome.DUPLICATE, carrierEventId: report.carrierEventId };
}
