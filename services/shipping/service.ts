/**
 * The Shipping service: carriers, shipping methods and their rates (admin),
 * rate quotes for the storefront (GetShippingRates) and for Order's checkout
 * (QuoteShippingRate), shipments for some or all items of an order with labels
 * from the carrier's provider (the sandbox by default), tracking from staff
 * and from signed carrier webhooks, package ecommerce.shipping.v1. Publishes
 * shipment.created, shipment.status_changed and shipment.delivered on
 * SHIPPING_EVENTS; calls Order (GetOrderInternal) when a shipment is created
 * and Product (BatchGetProducts) for the weights of a rate quote.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { file_ecommerce_shipping_v1_events } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { callerOf, isAdmin, requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { defineService } from "../../kit/server.ts";
import {
  createCarrier,
  createShippingMethod,
  createShippingRate,
  deleteShippingRate,
  listCarriers,
  listShippingMethods,
  listShippingRates,
  updateCarrier,
  updateShippingMethod,
  updateShippingRate,
} from "./carriers.ts";
import { shippingEntities } from "./entities.ts";
import { ShippingTables } from "./migrations/0001_shipping_tables.ts";
import { loadShippingConfig } from "./config.ts";
import { carrierProviders } from "./providers.ts";
import { catalogWeighed, getShippingQuote, getShippingRates, quoteShippingRate } from "./rates.ts";
import {
  addTrackingEvent,
  adminGetShipment,
  createShipment,
  getShipment,
  handleCarrierWebhook,
  listShipments,
  listShipmentsForOrder,
  trackShipment,
  updateShipmentStatus,
} from "./shipments.ts";

/** PUBLIC lists show inactive rows to admins who ask for them. */
const admin = (ctx: HandlerContext) => isAdmin(callerOf(ctx));

export const shippingService = defineService({
  name: "shipping",
  entities: shippingEntities,
  migrations: [{ name: "0001_shipping_tables", class: ShippingTables }],
  publishes: file_ecommerce_shipping_v1_events,
  setup(ctx) {
    const config = loadShippingConfig(ctx.env);
    return { config, providers: carrierProviders(config.labelCurrency) };
  },
  rateLimits: ({ config }) => [{ name: "tracking", methods: ["trackShipment"], points: config.trackingChecksPerWindow, windowMs: config.rateLimitWindowMs }],
  routes(router, svc, { config, providers }) {
    const weigh = (items: Parameters<typeof catalogWeighed>[2]) => catalogWeighed(svc.peers.client(ProductService), config.catalogTimeoutMs, items);
    router.service(ShippingService, {
      // PUBLIC
      listCarriers: (req, ctx) => listCarriers(emOf(ctx), admin(ctx), req),
      listShippingMethods: (req, ctx) => listShippingMethods(emOf(ctx), admin(ctx), req),
      getShippingRates: async (req, ctx) => getShippingRates(emOf(ctx), req, await weigh(req.items)),
      trackShipment: (req, ctx) => trackShipment(emOf(ctx), req.trackingNumber),
      // The signature is the authentication (checked against the carrier's shared keys).
      handleCarrierWebhook: (req, ctx) => handleCarrierWebhook(emOf(ctx), config, providers, req),

      // CUSTOMER: their own shipments only.
      getShipment: (req, ctx) => getShipment(emOf(ctx), requireUser(ctx).userId, req.id),
      listShipmentsForOrder: (req, ctx) => listShipmentsForOrder(emOf(ctx), requireUser(ctx).userId, req.orderId),

      // INTERNAL (order)
      quoteShippingRate: async (req, ctx) => quoteShippingRate(emOf(ctx), config.quoteTtlSeconds, req, await weigh(req.items)),
      getShippingQuote: (req, ctx) => getShippingQuote(emOf(ctx), req.quoteId),

      // ADMIN: the kit's interceptor enforced the policy.
      createCarrier: (req, ctx) => createCarrier(emOf(ctx), req),
      updateCarrier: (req, ctx) => updateCarrier(emOf(ctx), req),
      createShippingMethod: (req, ctx) => createShippingMethod(emOf(ctx), req),
      updateShippingMethod: (req, ctx) => updateShippingMethod(emOf(ctx), req),
      listShippingRates: (req, ctx) => listShippingRates(emOf(ctx), req),
      createShippingRate: (req, ctx) => createShippingRate(emOf(ctx), req),
      updateShippingRate: (req, ctx) => updateShippingRate(emOf(ctx), req),
      deleteShippingRate: (req, ctx) => deleteShippingRate(emOf(ctx), req.id),
      createShipment: (req, ctx) => createShipment(emOf(ctx), svc.peers, providers, req),
      adminGetShipment: (req, ctx) => adminGetShipment(emOf(ctx), req.id),
      listShipments: (req, ctx) => listShipments(emOf(ctx), req),
      addTrackingEvent: (req, ctx) => addTrackingEvent(emOf(ctx), req),
      updateShipmentStatus: (req, ctx) => updateShipmentStatus(emOf(ctx), req),
    });
  },
});
