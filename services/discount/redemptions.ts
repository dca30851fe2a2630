/**
 * RedeemDiscounts and ReleaseRedemption: the limits that must hold whatever
 * the number of simultaneous checkouts.
 *
 * A redemption is one transaction: the order's redemptions row first (its
 * primary key makes a concurrent retry of the same order wait and then
 * replay the recorded answer), then the engine over what is committed, then
 * one conditional UPDATE per counter: `budget_used + amount <= budget` on each
 * applied promotion, `times_used < usage_limit` on each coupon, promotions
 * before coupons and each in id order, so concurrent redemptions lock rows in
 * the same order and never deadlock. The coupon's UPDATE holds its row lock
 * until commit, so the per-customer count read after it (a new snapshot under
 * READ COMMITTED) sees every use committed before. When a conditional UPDATE
 * finds its limit reached by a concurrent redemption, the whole redemption
 * runs again on the new state, which then reports why (budget, usage limit,
 * a changed total). A release takes the same locks in the same order and
 * gives each counter back once.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { LockMode } from "@mikro-orm/core";
import { v7 as uuidv7 } from "uuid";
import {
  CouponRejectionReason,
  type RedeemDiscountsRequest,
  type RedeemDiscountsResponse,
  type Redemption,
  RedemptionSchema,
  RedemptionStatus,
  type ReleaseRedemptionRequest,
  type ReleaseRedemptionResponse,
} from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { DiscountRedeemedSchema, DiscountReleasedSchema, PromotionBudgetExhaustedSchema } from "../../gen/ecommerce/discount/v1/events_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { alreadyExists, failedPrecondition } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { DiscountConfig } from "./config.ts";
import { CouponUsageEntity, PromotionUsageEntity, RedemptionEntity } from "./entities.ts";
import { appliedMessage, engineCart, redeemedDiscount } from "./mapping.ts";
import { quote } from "./quotes.ts";

type Out<T> = Omit<T, "$typeName">;

/** A conditional UPDATE found its limit taken by a concurrent redemption: run again on the new state. */
class LimitRace extends Error {}

const attempts = 5;

export async function redeemDiscounts(em: EntityManager, config: DiscountConfig, req: RedeemDiscountsRequest): Promise<Out<RedeemDiscountsResponse>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await em.transactional((tx) => redeemOnce(tx, config, req));
    } catch (error) {
      if (!(error instanceof LimitRace) || attempt === attempts) {
        if (error instanceof LimitRace) throw failedPrecondition("the discounts changed while redeeming them; quote again and show the customer", "DISCOUNT_CHANGED");
        throw error;
      }
    }
  }
}

async function redeemOnce(tx: EntityManager, config: DiscountConfig, req: RedeemDiscountsRequest): Promise<Out<RedeemDiscountsResponse>> {
  const sql = sqlOf(tx);
  const currency = req.cart!.currencyCode;
  const expected = req.expectedTotalDiscount!.amountMinor;
  // Claims the order; a concurrent call for the same order waits here for the first to commit or roll back.
  const claimed = await sql.one(
    `insert into redemptions (order_id, user_id, currency, status, expected_total_minor, result)
     values ($1, $2, $3, 'redeemed', $4, ''::bytea) on conflict (order_id) do nothing returning order_id`,
    [req.orderId, req.userId, currency, expected],
  );
  if (!claimed) {
    const prior = (await sql.one<{ user_id: string; status: string; currency: string; expected_total_minor: string; result: Buffer }>(
      "select user_id, status, currency, expected_total_minor, result from redemptions where order_id = $1",
      [req.orderId],
    ))!;
    if (prior.status === "released") {
      throw failedPrecondition("this order's redemption was released; a cancelled or failed checkout needs a new order", "REDEMPTION_RELEASED");
    }
    if (prior.currency !== currency || BigInt(prior.expected_total_minor) !== expected || prior.user_id !== req.userId) {
      throw alreadyExists(
        `order ${req.orderId} was redeemed for another customer or with another expected_total_discount (${prior.expected_total_minor} ${prior.currency})`,
        "REDEMPTION_CONFLICT",
      );
    }
    return { redemption: fromBinary(RedemptionSchema, prior.result) };
  }

  const { result } = await quote(tx, config, engineCart(req.cart!), req.userId);
  const rejected = result.rejected[0];
  if (rejected) {
    throw failedPrecondition(`coupon ${rejected.code} no longer applies: ${rejected.message}`, CouponRejectionReason[rejected.reason], { code: rejected.code });
  }
  if (result.total !== expected) {
    throw failedPrecondition(
      `the discount is now ${result.total} minor units, not the ${expected} expected; quote again and show the customer`,
      "DISCOUNT_CHANGED",
      { total_discount_minor: result.total.toString() },
    );
  }
  const redeemedAt = timestampNow();
  const redemption = create(RedemptionSchema, {
    orderId: req.orderId,
    userId: req.userId,
    status: RedemptionStatus.REDEEMED,
    discounts: result.applied.map((a) => appliedMessage(a, currency)),
    itemsDiscountTotal: money(result.itemsDiscount, currency),
    shippingDiscountTotal: money(result.shippingDiscount, currency),
    totalDiscount: money(result.total, currency),
    redeemedAt,
  });
  if (result.applied.length === 0) {
    // Nothing to record: the claim goes, so nothing waits to be released.
    await sql.run("delete from redemptions where order_id = $1", [req.orderId]);
    return { redemption };
  }

  const exhausted: { id: string; name: string; budget: bigint }[] = [];
  for (const a of [...result.applied].sort((x, y) => (x.promotion.id < y.promotion.id ? -1 : 1))) {
    const row = await sql.one<{ budget_minor: string | null; budget_used_minor: string }>(
      `update promotions set budget_used_minor = budget_used_minor + $2, usage_count = usage_count + 1
        where id = $1 and is_active and (budget_minor is null or budget_used_minor + $2 <= budget_minor)
        returning budget_minor, budget_used_minor`,
      [a.promotion.id, a.amount],
    );
    if (!row) throw new LimitRace();
    if (row.budget_minor !== null && a.amount > 0n && BigInt(row.budget_used_minor) === BigInt(row.budget_minor)) {
      exhausted.push({ id: a.promotion.id, name: a.promotion.name, budget: BigInt(row.budget_minor) });
    }
  }
  const withCoupons = result.applied.filter((a) => a.coupon).sort((x, y) => (x.coupon!.id < y.coupon!.id ? -1 : 1));
  for (const a of withCoupons) {
    const coupon = a.coupon!;
    const row = await sql.one<{ usage_limit_per_user: number }>(
      `update coupons set times_used = times_used + 1
        where id = $1 and is_active and (usage_limit = 0 or times_used < usage_limit) returning usage_limit_per_user`,
      [coupon.id],
    );
    if (!row) throw new LimitRace();
    if (row.usage_limit_per_user > 0) {
      // Under the coupon's row lock: every earlier use by this customer is committed and counted.
      const used = (await sql.one<{ n: number }>("select count(*)::int as n from coupon_usage where coupon_id = $1 and user_id = $2 and released_at is null", [
        coupon.id,
        req.userId,
      ]))!.n;
      if (used >= row.usage_limit_per_user) {
        throw failedPrecondition(`coupon ${coupon.code} no longer applies: you have used this code as often as you may`, "USER_LIMIT_REACHED", { code: coupon.code });
      }
    }
  }

  for (const a of result.applied) {
    tx.create(PromotionUsageEntity, {
      id: uuidv7(),
      promotionId: a.promotion.id,
      couponId: a.coupon?.id ?? null,
      userId: req.userId,
      orderId: req.orderId,
      discountAmountMinor: a.amount,
      currency,
      createdAt: new Date(),
    });
    if (a.coupon) {
      tx.create(CouponUsageEntity, {
        id: uuidv7(),
        couponId: a.coupon.id,
        promotionId: a.promotion.id,
        userId: req.userId,
        orderId: req.orderId,
        discountAmountMinor: a.amount,
        currency,
        createdAt: new Date(),
      });
    }
  }
  await sql.run("update redemptions set result = $2 where order_id = $1", [req.orderId, Buffer.from(toBinary(RedemptionSchema, redemption))]);
  publishEvent(tx, DiscountRedeemedSchema, {
    orderId: req.orderId,
    userId: req.userId,
    currencyCode: currency,
    discounts: redemption.discounts.map(redeemedDiscount),
    itemsDiscountTotal: redemption.itemsDiscountTotal,
    shippingDiscountTotal: redemption.shippingDiscountTotal,
    totalDiscount: redemption.totalDiscount,
  });
  for (const e of exhausted) {
    publishEvent(tx, PromotionBudgetExhaustedSchema, {
      promotionId: e.id,
      promotionName: e.name,
      budget: money(e.budget, currency),
      budgetUsed: money(e.budget, currency),
      orderId: req.orderId,
    });
  }
  return { redemption };
}

export async function releaseRedemption(em: EntityManager, req: ReleaseRedemptionRequest): Promise<Out<ReleaseRedemptionResponse>> {
  return em.transactional(async (tx) => {
    const row = await tx.findOne(RedemptionEntity, { orderId: req.orderId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!row) return {};
    const recorded = fromBinary(RedemptionSchema, row.result);
    if (row.status === "released") return { redemption: recorded };
    const sql = sqlOf(tx);
    const usages = await sql.all<{ promotion_id: string; discount_amount_minor: string }>(
      "select promotion_id, discount_amount_minor from promotion_usage where order_id = $1 and released_at is null order by promotion_id",
      [req.orderId],
    );
    for (const u of usages) {
      await sql.run("update promotions set budget_used_minor = budget_used_minor - $2, usage_count = usage_count - 1 where id = $1", [
        u.promotion_id,
        u.discount_amount_minor,
      ]);
    }
    const coupons = await sql.all<{ coupon_id: string }>("select coupon_id from coupon_usage where order_id = $1 and released_at is null order by coupon_id", [req.orderId]);
    for (const c of coupons) await sql.run("update coupons set times_used = times_used - 1 where id = $1", [c.coupon_id]);
    await sql.run("update promotion_usage set released_at = now() where order_id = $1 and released_at is null", [req.orderId]);
    await sql.run("update coupon_usage set released_at = now() where order_id = $1 and released_at is null", [req.orderId]);
    const releasedAt = timestampNow();
    const released: Redemption = { ...recorded, status: RedemptionStatus.RELEASED, releasedAt };
    row.status = "released";
    row.releasedAt = new Date();
    row.releaseReason = req.reason || null;
    row.result = Buffer.from(toBinary(RedemptionSchema, released));
    publishEvent(tx, DiscountReleasedSchema, {
      orderId: row.orderId,
      userId: row.userId,
      currencyCode: row.currency,
      discounts: recorded.discounts.map(redeemedDiscount),
      totalDiscount: recorded.totalDiscount,
      reason: req.reason,
    });
    return { redemption: released };
  });
}
