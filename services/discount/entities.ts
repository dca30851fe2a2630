/**
 * MikroORM entities of the Discount service (tables in
 * migrations/0001_discount_tables.ts, customer_orders in 0002). Plain rows (promotions, rules,
 * coupons, usage, redemptions) are written through them; the counters that
 * limits depend on (budget_used_minor, usage_count, times_used) only by the
 * conditional UPDATEs of redemptions.ts. Money is bigint minor units.
 */
import type { InferEntity } from "@mikro-orm/core";
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const PromotionEntity = defineEntity({
  name: "Promotion",
  tableName: "promotions",
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    description: p.text().default(""),
    /** percentage | fixed_amount | free_shipping | buy_x_get_y */
    type: p.text(),
    percentOffBps: p.integer().nullable(),
    amountOffMinor: p.bigint("bigint").nullable(),
    buyQuantity: p.integer().nullable(),
    getQuantity: p.integer().nullable(),
    getDiscountBps: p.integer().nullable(),
    maxApplications: p.integer().nullable(),
    maxDiscountMinor: p.bigint("bigint").nullable(),
    currency: p.string().columnType("char(3)").nullable(),
    isAutomatic: p.boolean().default(false),
    priority: p.integer().default(0),
    stackable: p.boolean().default(false),
    budgetMinor: p.bigint("bigint").nullable(),
    budgetUsedMinor: p.bigint("bigint").default(0),
    usageCount: p.bigint("bigint").default(0),
    startsAt: p.datetime().nullable(),
    endsAt: p.datetime().nullable(),
    isActive: p.boolean().default(false),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type PromotionRow = InferEntity<typeof PromotionEntity>;

/** A rule's value, by rule_type. */
export type RuleValue = { amount_minor: string } | { ids: string[] } | { quantity: number } | { first_order: true };

export const DiscountRuleEntity = defineEntity({
  name: "DiscountRule",
  tableName: "discount_rules",
  properties: {
    id: p.uuid().primary(),
    promotionId: p.uuid(),
    /** min_subtotal | product_ids | category_ids | min_quantity | first_order | customer_ids */
    ruleType: p.text(),
    value: p.json<RuleValue>(),
    createdAt: p.datetime().onCreate(now),
  },
});
export type DiscountRuleRow = InferEntity<typeof DiscountRuleEntity>;

export const CouponEntity = defineEntity({
  name: "Coupon",
  tableName: "coupons",
  properties: {
    id: p.uuid().primary(),
    code: p.text(),
    promotionId: p.uuid(),
    usageLimit: p.integer().default(0),
    usageLimitPerUser: p.integer().default(0),
    timesUsed: p.integer().default(0),
    startsAt: p.datetime().nullable(),
    endsAt: p.datetime().nullable(),
    isActive: p.boolean().default(true),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type CouponRow = InferEntity<typeof CouponEntity>;

export const RedemptionEntity = defineEntity({
  name: "Redemption",
  tableName: "redemptions",
  properties: {
    orderId: p.uuid().primary(),
    userId: p.uuid(),
    currency: p.string().columnType("char(3)"),
    /** redeemed | released */
    status: p.text(),
    expectedTotalMinor: p.bigint("bigint"),
    result: p.blob(),
    redeemedAt: p.datetime().onCreate(now),
    releasedAt: p.datetime().nullable(),
    releaseReason: p.text().nullable(),
  },
});
export type RedemptionRow = InferEntity<typeof RedemptionEntity>;

export const PromotionUsageEntity = defineEntity({
  name: "PromotionUsage",
  tableName: "promotion_usage",
  properties: {
    id: p.uuid().primary(),
    promotionId: p.uuid(),
    couponId: p.uuid().nullable(),
    userId: p.uuid(),
    orderId: p.uuid(),
    discountAmountMinor: p.bigint("bigint"),
    currency: p.string().columnType("char(3)"),
    createdAt: p.datetime().onCreate(now),
    releasedAt: p.datetime().nullable(),
  },
});

export const CouponUsageEntity = defineEntity({
  name: "CouponUsage",
  tableName: "coupon_usage",
  properties: {
    id: p.uuid().primary(),
    couponId: p.uuid(),
    promotionId: p.uuid(),
    userId: p.uuid(),
    orderId: p.uuid(),
    discountAmountMinor: p.bigint("bigint"),
    currency: p.string().columnType("char(3)"),
    createdAt: p.datetime().onCreate(now),
    releasedAt: p.datetime().nullable(),
  },
});

/** A customer who has placed an order (order.created), for first-order rules at ValidateCoupon. */
export const CustomerOrderEntity = defineEntity({
  name: "CustomerOrder",
  tableName: "customer_orders",
  properties: {
    userId: p.uuid().primary(),
    firstOrderId: p.uuid(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const discountEntities = [PromotionEntity, DiscountRuleEntity, CouponEntity, RedemptionEntity, PromotionUsageEntity, CouponUsageEntity, CustomerOrderEntity];
