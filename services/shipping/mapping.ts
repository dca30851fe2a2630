/** Rows of shipping_db to contract messages, and the status strings of the database. */
import { create } from "@bufbuild/protobuf";
import {
  type Carrier,
  CarrierSchema,
  type ShippingMethod,
  ShippingMethodSchema,
  type ShippingRate,
  ShippingRateSchema,
  ShipmentStatus,
} from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { dbEnum } from "../../kit/enums.ts";
import { money, moneyOrUndefined } from "../../kit/money.ts";
import type { CarrierRow, ShippingMethodRow, ShippingRateRow } from "./entities.ts";

export const shipmentStatuses = dbEnum<ShipmentStatus>([
  [ShipmentStatus.PENDING, "pending"],
  [ShipmentStatus.LABEL_CREATED, "label_created"],
  [ShipmentStatus.IN_TRANSIT, "in_transit"],
  [ShipmentStatus.OUT_FOR_DELIVERY, "out_for_delivery"],
  [ShipmentStatus.DELIVERED, "delivered"],
  [ShipmentStatus.EXCEPTION, "exception"],
  [ShipmentStatus.RETURNED, "returned"],
]);

export function carrierMessage(row: CarrierRow): Carrier {
  return create(CarrierSchema, { id: row.id, code: row.code, name: row.name, trackingUrlTemplate: row.trackingUrlTemplate, isActive: row.isActive });
}

export function methodMessage(row: ShippingMethodRow): ShippingMethod {
  return create(ShippingMethodSchema, {
    id: row.id,
    carrierId: row.carrierId,
    code: row.code,
    name: row.name,
    description: row.description,
    minDays: row.minDays,
    maxDays: row.maxDays,
    isActive: row.isActive,
  });
}

export function rateMessage(row: ShippingRateRow): ShippingRate {
  return create(ShippingRateSchema, {
    id: row.id,
    methodId: row.methodId,
    countries: [...row.countries],
    minWeightGrams: row.minWeightGrams,
    maxWeightGrams: row.maxWeightGrams ?? 0,
    minSubtotal: moneyOrUndefined(row.minSubtotalMinor, row.currency),
    price: money(row.priceMinor, row.currency),
    freeAbove: moneyOrUndefined(row.freeAboveMinor, row.currency),
  });
}

/** A carrier's tracking page for a number; "" when the carrier has none. */
export function trackingUrlOf(template: string, trackingNumber: string): string {
  return template === "" ? "" : template.replaceAll("{tracking_number}", encodeURIComponent(trackingNumber));
}
