/**
 * The Shipping service: carriers, shipping methods and their rates (admin),
 * rate quotes for the storefront (GetShippingRates) and for Order's checkout
 * (QuoteShippingRate), package ecommerce.shipping.v1. Publishes on
 * SHIPPING_EVENTS (declared; shipments are not served yet).
 */
import type { HandlerContext } from "@connectrpc/connect";
import { file_ecommerce_shipping_v1_events } from "../../gen/ecommerce/shipping/v1/events_pb.js";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { callerOf, isAdmin } from "../../kit/auth/principal.ts";
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
import { getShippingRates, quoteShippingRate } from "./rates.ts";

/** PUBLIC lists show inactive rows to admins who ask for them. */
const admin = (ctx: HandlerContext) => isAdmin(callerOf(ctx));

export const shippingService = defineService({
  name: "shipping",
  entities: shippingEntities,
  migrations: [{ name: "0001_shipping_tables", class: ShippingTables }],
  publishes: file_ecommerce_shipping_v1_events,
  setup() {
    return {};
  },
  routes(router) {
    router.service(ShippingService, {
      // PUBLIC
      listCarriers: (req, ctx) => listCarriers(emOf(ctx), admin(ctx), req),
      listShippingMethods: (req, ctx) => listShippingMethods(emOf(ctx), admin(ctx), req),
      getShippingRates: (req, ctx) => getShippingRates(emOf(ctx), req),

      // INTERNAL (order)
      quoteShippingRate: (req, ctx) => quoteShippingRate(emOf(ctx), req),

      // ADMIN: the kit's interceptor enforced the policy.
      createCarrier: (req, ctx) => createCarrier(emOf(ctx), req),
      updateCarrier: (req, ctx) => updateCarrier(emOf(ctx), req),
      createShippingMethod: (req, ctx) => createShippingMethod(emOf(ctx), req),
      updateShippingMethod: (req, ctx) => updateShippingMethod(emOf(ctx), req),
      listShippingRates: (req, ctx) => listShippingRates(emOf(ctx), req),
      createShippingRate: (req, ctx) => createShippingRate(emOf(ctx), req),
      updateShippingRate: (req, ctx) => updateShippingRate(emOf(ctx), req),
      deleteShippingRate: (req, ctx) => deleteShippingRate(emOf(ctx), req.id),
    });
  },
});
