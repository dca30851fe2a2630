/**
 * Quotes: what the engine needs, loaded in three statements (the live
 * automatic promotions of the cart's currency, the coupons of its codes with
 * their promotions, their rules, and the customer's uses of those coupons),
 * then CalculateDiscounts and ValidateCoupon on top of the pure engine.
 * Categories need no call to the catalog: the snapshot lists each line's
 * categories with their ancestors (CartLine.category_ids). Whether a
 * signed-in customer has ordered, when the snapshot does not say, comes from
 * order.created (consumers.ts).
 */
import { raw } from "@mikro-orm/core";
import { create } from "@bufbuild/protobuf";
import {
  type CalculateDiscountsRequest,
  type CalculateDiscountsResponse,
  type ValidateCouponRequest,
  type ValidateCouponResponse,
  ValidateCouponResponseSchema,
} from "../../gen/ecommerce/discount/v1/discount_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { DiscountConfig } from "./config.ts";
import { hasOrdered } from "./consumers.ts";
import { calculateDiscounts, couponCodeCheck, type EngineCart, type EngineCoupon, type EnginePromotion, type EngineResult, normalizeCode } from "./engine.ts";
import { CouponEntity, DiscountRuleEntity, type DiscountRuleRow, PromotionEntity, type PromotionRow } from "./entities.ts";
import { appliedMessage, engineCart, engineCoupon, enginePromotion, offerMessage, resultMessage } from "./mapping.ts";

export interface Candidates {
  automatic: EnginePromotion[];
  coupons: Map<string, EngineCoupon>;
  /** Promotion descriptions, for offers. */
  descriptions: Map<string, string>;
}

/**
 * Loads the candidates of a cart: live automatic promotions of its currency (unless `currency` is
 * undefined: a code checked without a cart) and the coupons of `codes`.
 */
export async function loadCandidates(em: EntityManager, config: DiscountConfig, currency: string | undefined, codes: readonly string[], userId: string, now: Date): Promise<Candidates> {
  const lower = [...new Set(codes.map((c) => normalizeCode(c).toLowerCase()))];
  const automatic = currency === undefined ? [] : await em.find(
    PromotionEntity,
    {
      isAutomatic: true,
      isActive: true,
      $and: [
        { $or: [{ startsAt: null }, { startsAt: { $lte: now } }] },
        { $or: [{ endsAt: null }, { endsAt: { $gt: now } }] },
        { $or: [{ currency: null }, { currency }] },
      ],
    },
    { orderBy: { priority: "desc", id: "asc" }, limit: config.maxAutomatic },
  );
  const couponRows = lower.length ? await em.find(CouponEntity, { [raw("lower(code)")]: { $in: lower } }) : [];
  const known = new Set(automatic.map((p) => p.id));
  const missing = [...new Set(couponRows.map((c) => c.promotionId))].filter((id) => !known.has(id));
  const couponPromotions: PromotionRow[] = missing.length ? await em.find(PromotionEntity, { id: { $in: missing } }) : [];
  const promotions = [...automatic, ...couponPromotions];
  const rules: DiscountRuleRow[] = promotions.length ? await em.find(DiscountRuleEntity, { promotionId: { $in: promotions.map((p) => p.id) } }) : [];
  const uses = new Map<string, number>();
  if (userId && couponRows.length) {
    const rows = await sqlOf(em).all<{ coupon_id: string; n: number }>(
      "select coupon_id, count(*)::int as n from coupon_usage where user_id = $1 and coupon_id = any($2::uuid[]) and released_at is null group by coupon_id",
      [userId, couponRows.map((c) => c.id)],
    );
    for (const r of rows) uses.set(r.coupon_id, r.n);
  }
  const engineOf = new Map(promotions.map((p) => [p.id, enginePromotion(p, rules.filter((r) => r.promotionId === p.id))]));
  return {
    automatic: automatic.map((p) => engineOf.get(p.id)!),
    coupons: new Map(couponRows.map((c) => [c.code, engineCoupon(c, engineOf.get(c.promotionId)!, uses.get(c.id) ?? 0)])),
    descriptions: new Map(promotions.map((p) => [p.id, p.description])),
  };
}

/**
 * Loads and runs the engine for a cart. A snapshot that leaves is_first_order unset (a cart before checkout) gets, for a
 * signed-in customer, what order.created told this service; asked only when a candidate has a first-order rule.
 */
export async function quote(em: EntityManager, config: DiscountConfig, cart: EngineCart, userId: string, now = new Date()): Promise<{ result: EngineResult; candidates: Candidates }> {
  const candidates = await loadCandidates(em, config, cart.currency, cart.couponCodes, userId, now);
  const firstOrderRule = [...candidates.automatic, ...[...candidates.coupons.values()].map((c) => c.promotion)].some((p) => p.rules.firstOrder);
  const known = cart.isFirstOrder === undefined && userId !== "" && firstOrderRule ? { ...cart, isFirstOrder: !(await hasOrdered(em, userId)) } : cart;
  return { result: calculateDiscounts({ cart: known, userId, automatic: candidates.automatic, coupons: candidates.coupons, now }), candidates };
}

export async function calculate(em: EntityManager, config: DiscountConfig, req: CalculateDiscountsRequest): Promise<CalculateDiscountsResponse> {
  const { result } = await quote(em, config, engineCart(req.cart!), req.userId);
  return resultMessage(result);
}

/** ValidateCoupon for `userId` ("" for a guest). */
export async function validateCoupon(em: EntityManager, config: DiscountConfig, userId: string, req: ValidateCouponRequest): Promise<ValidateCouponResponse> {
  const code = normalizeCode(req.code);
  const now = new Date();
  if (!req.cart) {
    const { coupons, descriptions } = await loadCandidates(em, config, undefined, [code], userId, now);
    const coupon = coupons.get(code);
    const refusal = couponCodeCheck(coupon, userId, now);
    return create(ValidateCouponResponseSchema, {
      valid: !refusal,
      reason: refusal?.reason ?? 0,
      message: refusal?.message ?? "",
      offer: coupon && coupon.isActive && coupon.promotion.isActive ? offerMessage(coupon, descriptions.get(coupon.promotion.id) ?? "") : undefined,
    });
  }
  // The code is checked as if added to the cart's codes. The snapshot's is_first_order is the storefront's claim, so it is
  // dropped: quote() asks order.created's record for a signed-in customer; for a guest the rule is taken as met (checkout decides).
  const cart = engineCart(req.cart, { ignoreFirstOrder: true });
  const codes = [...cart.couponCodes.filter((c) => normalizeCode(c) !== code), code];
  const { result, candidates } = await quote(em, config, { ...cart, couponCodes: codes }, userId, now);
  const coupon = candidates.coupons.get(code);
  const rejected = result.rejected.find((r) => normalizeCode(r.code) === code);
  const applied = result.applied.find((a) => a.coupon?.code === code);
  return create(ValidateCouponResponseSchema, {
    valid: !rejected && applied !== undefined,
    reason: rejected?.reason ?? 0,
    message: rejected?.message ?? "",
    offer: coupon && coupon.isActive && coupon.promotion.isActive ? offerMessage(coupon, candidates.descriptions.get(coupon.promotion.id) ?? "") : undefined,
    discount: applied && !rejected ? appliedMessage(applied, result.currency) : undefined,
    minSubtotal: rejected?.minSubtotal !== undefined ? money(rejected.minSubtotal, result.currency) : undefined,
  });
}
