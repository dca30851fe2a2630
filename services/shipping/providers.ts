/**
 * Carrier integrations. A provider issues labels (tracking number, cost,
 * estimate) and reads its own webhook bodies into tracking reports; the
 * domain code never sees a carrier's format. The carrier's `code` selects
 * the provider; `sandbox` is built in and behaves like a real carrier
 * without leaving the machine. Adding a real carrier: implement
 * CarrierProvider and register it in `carrierProviders` under its code.
 */
import { randomInt } from "node:crypto";
import { ShipmentStatus } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { invalidArgument } from "../../kit/errors.ts";
import { shipmentStatuses } from "./mapping.ts";

export interface LabelRequest {
  shipmentId: string;
  weightGrams: number;
  countryCode: string;
  maxDays: number;
}

export interface Label {
  trackingNumber: string;
  costMinor: bigint;
  currency: string;
  estimatedDelivery?: Date;
}

/** One tracking update of a webhook body, in our terms. */
export interface TrackingReport {
  carrierEventId: string;
  trackingNumber: string;
  status: ShipmentStatus;
  location: string;
  description: string;
  occurredAt: Date;
}

export interface CarrierProvider {
  /** Issues a label; throws UNAVAILABLE (reason CARRIER_UNAVAILABLE) when the carrier cannot now. */
  createLabel(req: LabelRequest): Promise<Label>;
  /** Reads a verified webhook body; INVALID_ARGUMENT (reason MALFORMED_PAYLOAD) when it cannot. */
  parseWebhook(payload: Uint8Array): TrackingReport;
}

const malformed = (why: string) => invalidArgument("payload", `is not a carrier tracking event: ${why}`, "MALFORMED_PAYLOAD");

/**
 * The built-in sandbox carrier: tracking numbers `SBX` + 12 digits, a label
 * cost of 3.00 plus 0.50 per started kilogram, and webhook bodies
 * `{"id", "tracking_number", "status" ("in_transit", ...), "location",
 * "description", "occurred_at" (RFC 3339)}`.
 */
export function sandboxCarrier(labelCurrency: string): CarrierProvider {
  return {
    async createLabel(req) {
      const digits = Array.from({ length: 12 }, () => randomInt(10)).join("");
      return { trackingNumber: `SBX${digits}`, costMinor: 300n + 50n * BigInt(Math.ceil(req.weightGrams / 1000)), currency: labelCurrency };
    },
    parseWebhook(payload) {
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.from(payload).toString("utf8")) as Record<string, unknown>;
      } catch {
        throw malformed("the body is not JSON");
      }
      const text = (name: string, max: number, required = true): string => {
        const v = body?.[name];
        if (v === undefined && !required) return "";
        if (typeof v !== "string" || (required && v === "") || v.length > max) throw malformed(`${name} must be a string of at most ${max} characters`);
        return v;
      };
      const id = text("id", 128);
      const trackingNumber = text("tracking_number", 64);
      const statusText = text("status", 32);
      if (!shipmentStatuses.dbValues.includes(statusText) || statusText === "pending") throw malformed(`unknown status ${statusText}`);
      const occurredAt = new Date(text("occurred_at", 40));
      if (Number.isNaN(occurredAt.getTime())) throw malformed("occurred_at must be an RFC 3339 time");
      return {
        carrierEventId: id,
        trackingNumber,
        status: shipmentStatuses.fromDb(statusText),
        location: text("location", 200, false),
        description: text("description", 500, false) || statusText.replaceAll("_", " "),
        occurredAt,
      };
    },
  };
}

export type CarrierProviders = (code: string) => CarrierProvider;

/** The provider of a carrier code: the registered integration, else the sandbox (no real carrier is wired yet). */
export function carrierProviders(labelCurrency: string): CarrierProviders {
  const sandbox = sandboxCarrier(labelCurrency);
  const registered = new Map<string, CarrierProvider>([["sandbox", sandbox]]);
  return (code) => registered.get(code) ?? sandbox;
}

export { ShipmentStatus };
