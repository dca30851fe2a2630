/**
 * MikroORM entities of the Shipping service (tables in
 * migrations/0001_shipping_tables.ts). Plain rows are written through them;
 * money is bigint minor units, weights are grams.
 */
import type { InferEntity } from "@mikro-orm/core";
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const CarrierEntity = defineEntity({
  name: "Carrier",
  tableName: "carriers",
  properties: {
    id: p.uuid().primary(),
    code: p.text(),
    name: p.text(),
    trackingUrlTemplate: p.text().default(""),
    isActive: p.boolean().default(false),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type CarrierRow = InferEntity<typeof CarrierEntity>;

export const ShippingMethodEntity = defineEntity({
  name: "ShippingMethod",
  tableName: "shipping_methods",
  properties: {
    id: p.uuid().primary(),
    carrierId: p.uuid(),
    code: p.text(),
    name: p.text(),
    description: p.text().default(""),
    minDays: p.integer(),
    maxDays: p.integer(),
    isActive: p.boolean().default(false),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type ShippingMethodRow = InferEntity<typeof ShippingMethodEntity>;

export const ShippingRateEntity = defineEntity({
  name: "ShippingRate",
  tableName: "shipping_rates",
  properties: {
    id: p.uuid().primary(),
    methodId: p.uuid(),
    countries: p.array<string>().default([]),
    minWeightGrams: p.integer().default(0),
    maxWeightGrams: p.integer().nullable(),
    minSubtotalMinor: p.bigint("bigint").nullable(),
    priceMinor: p.bigint("bigint"),
    currency: p.string().columnType("char(3)"),
    freeAboveMinor: p.bigint("bigint").nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type ShippingRateRow = InferEntity<typeof ShippingRateEntity>;

export const ShipmentEntity = defineEntity({
  name: "Shipment",
  tableName: "shipments",
  properties: {
    id: p.uuid().primary(),
    orderId: p.uuid(),
    userId: p.uuid(),
    carrierId: p.uuid(),
    methodId: p.uuid(),
    trackingNumber: p.text(),
    /** pending | label_created | in_transit | out_for_delivery | delivered | exception | returned */
    status: p.text(),
    shipTo: p.json<Record<string, unknown>>(),
    weightGrams: p.integer(),
    costMinor: p.bigint("bigint").nullable(),
    costCurrency: p.string().columnType("char(3)").nullable(),
    estimatedDelivery: p.datetime().nullable(),
    shippedAt: p.datetime().nullable(),
    deliveredAt: p.datetime().nullable(),
    statusOccurredAt: p.datetime().nullable(),
    idempotencyKey: p.text(),
    requestHash: p.text(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type ShipmentRow = InferEntity<typeof ShipmentEntity>;

export const ShipmentItemEntity = defineEntity({
  name: "ShipmentItem",
  tableName: "shipment_items",
  properties: {
    id: p.uuid().primary(),
    shipmentId: p.uuid(),
    orderItemId: p.uuid(),
    quantity: p.integer(),
  },
});
export type ShipmentItemRow = InferEntity<typeof ShipmentItemEntity>;

export const TrackingEventEntity = defineEntity({
  name: "TrackingEvent",
  tableName: "tracking_events",
  properties: {
    id: p.uuid().primary(),
    shipmentId: p.uuid(),
    status: p.text(),
    location: p.text().default(""),
    description: p.text(),
    occurredAt: p.datetime(),
    carrierEventId: p.text().nullable(),
    createdAt: p.datetime().onCreate(now),
  },
});
export type TrackingEventRow = InferEntity<typeof TrackingEventEntity>;

export const shippingEntities = [CarrierEntity, ShippingMethodEntity, ShippingRateEntity, ShipmentEntity, ShipmentItemEntity, TrackingEventEntity];
