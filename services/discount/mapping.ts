/**
 * Rows to contract messages and engine inputs, and engine results to
 * messages, in one place. The database keeps readable strings for enums and
 * bigint minor units for money; a null currency is a promotion without
 * amounts ("" in the contract).
 */
import { create } from "@bufbuild/protobuf";
import {
  type AppliedDiscount,
  AppliedDiscountSchema,
  type CalculateDiscountsResponse,
  CalculateDiscountsResponseSchema,
  type CartSnapshot,
  type Coupon,
  type CouponOffer,
  CouponOfferSchema,
  CouponSchema,
  type DiscountRule,
  DiscountRuleSchema,
  DiscountRuleType,
  IdListSchema,
  type Promotion,
  PromotionSchema,
  PromotionType,
} from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { type RedeemedDiscount, RedeemedDiscountSchema } from "../../gen/ecommerce/discount/v1/events_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { dbEnum } from "../../kit/enums.ts";
import { money, moneyOrUndefined } from "../../kit/money.ts";
import type { Applied, EngineCart, EngineCoupon, EnginePromotion, EngineResult, EngineRules } from "./engine.ts";
import type { CouponRow, DiscountRuleRow, PromotionRow, RuleValue } from "./entities.ts";

export const promotionTypes = dbEnum<PromotionType>([
  [PromotionType.PERCENTAGE, "percentage"],
  [PromotionType.FIXED_AMOUNT, "fixed_amount"],
  [PromotionType.FREE_SHIPPING, "free_shipping"],
  [PromotionType.BUY_X_GET_Y, "buy_x_get_y"],
]);

export const ruleTypes = dbEnum<DiscountRuleType>([
  [DiscountRuleType.MIN_SUBTOTAL, "min_subtotal"],
  [DiscountRuleType.PRODUCT_IDS, "product_ids"],
  [DiscountRuleType.CATEGORY_IDS, "category_ids"],
  [DiscountRuleType.MIN_QUANTITY, "min_quantity"],
  [DiscountRuleType.FIRST_ORDER, "first_order"],
  [DiscountRuleType.CUSTOMER_IDS, "customer_ids"],
]);

const big = (v: bigint | string | number | null | undefined): bigint | undefined => (v === null || v === undefined ? undefined : BigInt(v));
const dateOrUndefined = (v: Date | null | undefined): Date | undefined => v ?? undefined;

/** The database value of a contract rule (validation made sure the member matches rule_type). */
export function ruleValueOf(rule: DiscountRule): RuleValue {
  const v = rule.value;
  switch (v.case) {
    case "minSubtotal":
      return { amount_minor: v.value.amountMinor.toString() };
    case "productIds":
    case "categoryIds":
    case "customerIds":
      return { ids: [...v.value.ids] };
    case "minQuantity":
      return { quantity: v.value };
    case "firstOrder":
      return { first_order: true };
    default:
      throw new Error("rule without a value");
  }
}

export function ruleMessage(row: DiscountRuleRow, currency: string): DiscountRule {
  const type = ruleTypes.fromDb(row.ruleType);
  const v = row.value as Record<string, unknown>;
  const ids = { ids: (v.ids as string[] | undefined) ?? [] };
  const value: DiscountRule["value"] =
    type === DiscountRuleType.MIN_SUBTOTAL
      ? { case: "minSubtotal", value: money(BigInt(v.amount_minor as string), currency) }
      : type === DiscountRuleType.PRODUCT_IDS
        ? { case: "productIds", value: create(IdListSchema, ids) }
        : type === DiscountRuleType.CATEGORY_IDS
          ? { case: "categoryIds", value: create(IdListSchema, ids) }
          : type === DiscountRuleType.MIN_QUANTITY
            ? { case: "minQuantity", value: v.quantity as number }
            : type === DiscountRuleType.FIRST_ORDER
              ? { case: "firstOrder", value: true }
              : { case: "customerIds", value: create(IdListSchema, ids) };
  return create(DiscountRuleSchema, { id: row.id, promotionId: row.promotionId, ruleType: type, value, createdAt: timestampOf(row.createdAt) });
}




/** The value oneof of a promotion row. */
function valueOf(row: PromotionRow, currency: string): Promotion["value"] {
  switch (promotionTypes.fromDb(row.type)) {
    case PromotionType.PERCENTAGE:
      return { case: "percentOffBps", value: row.percentOffBps! };
    case PromotionType.FIXED_AMOUNT:
      return { case: "amountOff", value: money(row.amountOffMinor!, currency) };
    case PromotionType.BUY_X_GET_Y:
      return {
        case: "buyXGetY",
        value: { $typeName: "ecommerce.discount.v1.BuyXGetY", buyQuantity: row.buyQuantity!, getQuantity: row.getQuantity!, getDiscountBps: row.getDiscountBps!, maxApplications: row.maxApplications! },
      };
    default:
      return { case: undefined };
  }
}

export function promotionMessage(row: PromotionRow, rules: readonly DiscountRuleRow[]): Promotion {
  const currency = row.currency ?? "";
  return create(PromotionSchema, {
    id: row.id,
    name: row.name,
    description: row.description,
    type: promotionTypes.fromDb(row.type),
    value: valueOf(row, currency),
    maxDiscount: moneyOrUndefined(row.maxDiscountMinor, currency),
    currencyCode: currency,
    isAutomatic: row.isAutomatic,
    priority: row.priority,
    stackable: row.stackable,
    budget: moneyOrUndefined(row.budgetMinor, currency),
    budgetUsed: moneyOrUndefined(row.budgetUsedMinor, currency),
    usageCount: BigInt(row.usageCount),
    startsAt: timestampOf(row.startsAt),
    endsAt: timestampOf(row.endsAt),
    isActive: row.isActive,
    rules: [...rules].sort(byCreated).map((r) => ruleMessage(r, currency)),
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  });
}

const byCreated = (a: DiscountRuleRow, b: DiscountRuleRow) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1);

export function engineRules(rules: readonly DiscountRuleRow[]): EngineRules {
  const out: { -readonly [K in keyof EngineRules]: EngineRules[K] } = {};
  for (const r of rules) {
    const v = r.value as Record<string, unknown>;
    switch (r.ruleType) {
      case "min_subtotal":
        out.minSubtotal = BigInt(v.amount_minor as string);
        break;
      case "product_ids":
        out.productIds = v.ids as string[];
        break;
      case "category_ids":
        out.categoryIds = v.ids as string[];
        break;
      case "min_quantity":
        out.minQuantity = v.quantity as number;
        break;
      case "first_order":
        out.firstOrder = true;
        break;
      case "customer_ids":
        out.customerIds = v.ids as string[];
        break;
    }
  }
  return out;
}

export function enginePromotion(row: PromotionRow, rules: readonly DiscountRuleRow[]): EnginePromotion {
  const type = promotionTypes.fromDb(row.type);
  return {
    id: row.id,
    name: row.name,
    type,
    ...(row.percentOffBps !== null && row.percentOffBps !== undefined ? { percentOffBps: row.percentOffBps } : {}),
    ...(row.amountOffMinor !== null && row.amountOffMinor !== undefined ? { amountOff: BigInt(row.amountOffMinor) } : {}),
    ...(type === PromotionType.BUY_X_GET_Y
      ? { buyXGetY: { buy: row.buyQuantity!, get: row.getQuantity!, discountBps: row.getDiscountBps!, maxApplications: row.maxApplications! } }
      : {}),
    ...(big(row.maxDiscountMinor) !== undefined ? { maxDiscount: big(row.maxDiscountMinor)! } : {}),
    currency: row.currency ?? "",
    isAutomatic: row.isAutomatic,
    priority: row.priority,
    stackable: row.stackable,
    ...(big(row.budgetMinor) !== undefined ? { budget: big(row.budgetMinor)! } : {}),
    budgetUsed: BigInt(row.budgetUsedMinor),
    ...(row.startsAt ? { startsAt: row.startsAt } : {}),
    ...(row.endsAt ? { endsAt: row.endsAt } : {}),
    isActive: row.isActive,
    rules: engineRules(rules),
  };
}

export function engineCoupon(row: CouponRow, promotion: EnginePromotion, userUses: number): EngineCoupon {
  return {
    id: row.id,
    code: row.code,
    promotion,
    usageLimit: row.usageLimit,
    usageLimitPerUser: row.usageLimitPerUser,
    timesUsed: row.timesUsed,
    userUses,
    ...(dateOrUndefined(row.startsAt) ? { startsAt: row.startsAt! } : {}),
    ...(dateOrUndefined(row.endsAt) ? { endsAt: row.endsAt! } : {}),
    isActive: row.isActive,
  };
}

export function couponMessage(row: CouponRow, promotionName: string): Coupon {
  return create(CouponSchema, {
    id: row.id,
    code: row.code,
    promotionId: row.promotionId,
    promotionName,
    usageLimit: row.usageLimit,
    usageLimitPerUser: row.usageLimitPerUser,
    timesUsed: row.timesUsed,
    startsAt: timestampOf(row.startsAt),
    endsAt: timestampOf(row.endsAt),
    isActive: row.isActive,
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  });
}

export function offerMessage(coupon: EngineCoupon, description: string): CouponOffer {
  const p = coupon.promotion;
  const ends = [coupon.endsAt, p.endsAt].filter((d): d is Date => d !== undefined).sort((a, b) => a.getTime() - b.getTime())[0];
  return create(CouponOfferSchema, {
    code: coupon.code,
    name: p.name,
    description,
    type: p.type,
    percentOffBps: p.percentOffBps ?? 0,
    amountOff: p.amountOff !== undefined ? money(p.amountOff, p.currency) : undefined,
    endsAt: timestampOf(ends),
  });
}

/** The engine's view of a contract snapshot. */
export function engineCart(cart: CartSnapshot, options: { ignoreFirstOrder?: boolean } = {}): EngineCart {
  return {
    currency: cart.currencyCode,
    lines: cart.lines.map((l) => ({ lineId: l.lineId, productId: l.productId, categoryIds: l.categoryIds, quantity: l.quantity, unitPrice: l.unitPrice!.amountMinor })),
    ...(cart.shippingAmount ? { shipping: cart.shippingAmount.amountMinor } : {}),
    couponCodes: cart.couponCodes,
    ...(cart.isFirstOrder !== undefined && !options.ignoreFirstOrder ? { isFirstOrder: cart.isFirstOrder } : {}),
  };
}

export function appliedMessage(a: Applied, currency: string): AppliedDiscount {
  return create(AppliedDiscountSchema, {
    promotionId: a.promotion.id,
    promotionName: a.promotion.name,
    promotionType: a.promotion.type,
    couponId: a.coupon?.id ?? "",
    couponCode: a.coupon?.code ?? "",
    amount: money(a.amount, currency),
    freeShipping: a.freeShipping,
    allocations: a.allocations.map((x) => ({ lineId: x.lineId, amount: money(x.amount, currency) })),
  });
}

export function resultMessage(r: EngineResult): CalculateDiscountsResponse {
  const c = r.currency;
  return create(CalculateDiscountsResponseSchema, {
    discounts: r.applied.map((a) => appliedMessage(a, c)),
    subtotal: money(r.subtotal, c),
    itemsDiscountTotal: money(r.itemsDiscount, c),
    shippingDiscountTotal: money(r.shippingDiscount, c),
    totalDiscount: money(r.total, c),
    freeShipping: r.freeShipping,
    rejectedCoupons: r.rejected.map((x) => ({ code: x.code, reason: x.reason, message: x.message, minSubtotal: x.minSubtotal !== undefined ? money(x.minSubtotal, c) : undefined })),
    skippedPromotions: r.skipped.map((x) => ({ promotionId: x.promotion.id, promotionName: x.promotion.name, reason: x.reason, message: x.message })),
  });
}

export function redeemedDiscount(d: AppliedDiscount): RedeemedDiscount {
  return create(RedeemedDiscountSchema, {
    promotionId: d.promotionId,
    promotionName: d.promotionName,
    couponId: d.couponId,
    couponCode: d.couponCode,
    amount: d.amount,
    freeShipping: d.freeShipping,
  });
}
