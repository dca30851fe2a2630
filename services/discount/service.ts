/**
 * The Discount service: promotions, their rules and coupon codes (admin), the
 * discount engine for carts (CalculateDiscounts for Cart and Order,
 * ValidateCoupon for the storefront) and redemptions under limits that hold
 * under concurrency (RedeemDiscounts / ReleaseRedemption for Order), package
 * ecommerce.discount.v1. Publishes discount.redeemed, discount.released and
 * promotion.budget_exhausted on DISCOUNT_EVENTS; consumes order.created (who has
 * ordered, for first-order rules at ValidateCoupon) and calls no peer (cart
 * snapshots carry each line's categories with their ancestors).
 */
import type { HandlerContext } from "@connectrpc/connect";
import { DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { file_ecommerce_discount_v1_events } from "../../gen/ecommerce/discount/v1/events_pb.js";
import { callerOf } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { defineService } from "../../kit/server.ts";
import { loadDiscountConfig } from "./config.ts";
import { discountConsumers } from "./consumers.ts";
import { createCoupon, generateCoupons, getCoupon, listCoupons, listCouponUsage, listPromotionUsage, updateCoupon } from "./coupons.ts";
import { discountEntities } from "./entities.ts";
import { DiscountTables } from "./migrations/0001_discount_tables.ts";
import { CustomerOrders } from "./migrations/0002_customer_orders.ts";
import { addDiscountRule, createPromotion, deactivatePromotion, getPromotion, listPromotions, removeDiscountRule, updatePromotion } from "./promotions.ts";
import { calculate, validateCoupon } from "./quotes.ts";
import { redeemDiscounts, releaseRedemption } from "./redemptions.ts";

/** The signed-in customer a PUBLIC call is made by (directly or forwarded by a service); "" for a guest. */
function viewerOf(ctx: HandlerContext): string {
  const caller = callerOf(ctx);
  if (caller?.kind === "user") return caller.userId;
  if (caller?.kind === "service") return caller.onBehalfOf?.userId ?? "";
  return "";
}

export const discountService = defineService({
  name: "discount",
  entities: discountEntities,
  migrations: [
    { name: "0001_discount_tables", class: DiscountTables },
    { name: "0002_customer_orders", class: CustomerOrders },
  ],
  publishes: file_ecommerce_discount_v1_events,
  setup(ctx) {
    return { config: loadDiscountConfig(ctx.env) };
  },
  consumers: () => discountConsumers(),
  rateLimits: ({ config }) => [{ name: "code-checks", methods: ["validateCoupon"], points: config.codeChecksPerWindow, windowMs: config.rateLimitWindowMs }],
  routes(router, _svc, { config }) {
    router.service(DiscountService, {
      // ADMIN: the kit's interceptor enforced the policy.
      createPromotion: (req, ctx) => createPromotion(emOf(ctx), config, req),
      updatePromotion: (req, ctx) => updatePromotion(emOf(ctx), req),
      getPromotion: (req, ctx) => getPromotion(emOf(ctx), req.promotionId),
      listPromotions: (req, ctx) => listPromotions(emOf(ctx), req),
      deactivatePromotion: (req, ctx) => deactivatePromotion(emOf(ctx), req.promotionId),
      addDiscountRule: (req, ctx) => addDiscountRule(emOf(ctx), req),
      removeDiscountRule: (req, ctx) => removeDiscountRule(emOf(ctx), req),
      createCoupon: (req, ctx) => createCoupon(emOf(ctx), req),
      generateCoupons: (req, ctx) => generateCoupons(emOf(ctx), req),
      updateCoupon: (req, ctx) => updateCoupon(emOf(ctx), req),
      getCoupon: (req, ctx) => getCoupon(emOf(ctx), req),
      listCoupons: (req, ctx) => listCoupons(emOf(ctx), req),
      listCouponUsage: (req, ctx) => listCouponUsage(emOf(ctx), req),
      listPromotionUsage: (req, ctx) => listPromotionUsage(emOf(ctx), req),

      // PUBLIC: a guest or a customer checks a code.
      validateCoupon: (req, ctx) => validateCoupon(emOf(ctx), config, viewerOf(ctx), req),

      // INTERNAL (cart, order): the snapshot and the user id are the caller's.
      calculateDiscounts: (req, ctx) => calculate(emOf(ctx), config, req),
      redeemDiscounts: (req, ctx) => redeemDiscounts(emOf(ctx), config, req),
      releaseRedemption: (req, ctx) => releaseRedemption(emOf(ctx), req),
    });
  },
});
