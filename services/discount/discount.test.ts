/**
 * The Discount service through its contract, against a real server,
 * PostgreSQL and a private nats-server: admin CRUD and policies, every
 * promotion type and rule through CalculateDiscounts, ValidateCoupon, and
 * redemptions whose limits hold under concurrency (budget, usage limit,
 * per-customer limit), idempotent per order, released once.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { jetstream } from "@nats-io/jetstream";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CouponRejectionReason,
  CreatePromotionRequestSchema,
  GenerateCouponsRequestSchema,
  DiscountRuleType,
  PromotionType,
  RedemptionStatus,
} from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { DiscountRedeemedSchema, DiscountReleasedSchema, PromotionBudgetExhaustedSchema } from "../../gen/ecommerce/discount/v1/events_pb.js";
import { OrderCreatedSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import { subjectOf } from "../../kit/events/contracts.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { codeAlphabet, generateCoupons } from "./coupons.ts";
import { auth, type DiscountHarness, discountEvents, eur, failure, snapshot, startDiscountHarness } from "./testing.ts";

let h: DiscountHarness;

beforeAll(async () => {
  h = await startDiscountHarness();
});

afterAll(async () => {
  await h?.stop();
});

type PromotionInit = Partial<MessageInitShape<typeof CreatePromotionRequestSchema>>;

let names = 0;
async function promotion(init: PromotionInit) {
  const { promotion } = await h.discounts.createPromotion({ name: `promo ${++names}`, type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 1000 }, isActive: true, ...init } as never, auth(h.admin));
  return promotion!;
}

let codes = 0;
async function couponFor(promotionId: string, init: Record<string, unknown> = {}) {
  const { coupon } = await h.discounts.createCoupon({ promotionId, code: `CODE${Date.now().toString(36)}${++codes}`, ...init }, auth(h.admin));
  return coupon!;
}

const calc = (cart: ReturnType<typeof snapshot>, userId = "") => h.discounts.calculateDiscounts({ cart, userId }, auth(h.cart));

const redeem = (orderId: string, userId: string, cart: ReturnType<typeof snapshot>, expected: bigint) =>
  h.discounts.redeemDiscounts({ orderId, userId, cart: { shippingAmount: eur(0n, cart.currencyCode), isFirstOrder: false, ...cart }, expectedTotalDiscount: eur(expected, cart.currencyCode) }, auth(h.order));

/** Promotions are global: each test that needs automatic ones uses its own currency so others do not interfere. */
const only = (currencyCode: string) => ({ currencyCode });

describe("policies and input", () => {
  it("refuses customers on admin RPCs and the wrong services on internal ones", async () => {
    expect((await failure(h.discounts.listPromotions({}, auth(h.customer)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.discounts.createPromotion({ name: "x", type: PromotionType.FREE_SHIPPING }, auth(h.customer)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.discounts.calculateDiscounts({ cart: snapshot([]) }, auth(h.customer)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.discounts.releaseRedemption({ orderId: uuidv7() }, auth(h.cart)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.discounts.listPromotions({}, {}))).code).toBe(Code.Unauthenticated);
  });

  it("answers bad input with INVALID_ARGUMENT naming the field", async () => {
    const mismatched = await failure(
      h.discounts.createPromotion({ name: "x", type: PromotionType.PERCENTAGE, value: { case: "amountOff", value: eur(100n) }, currencyCode: "EUR" }, auth(h.admin)),
    );
    expect(mismatched.code).toBe(Code.InvalidArgument);
    const noCurrency = await failure(h.discounts.createPromotion({ name: "x", type: PromotionType.FREE_SHIPPING, budget: eur(100n) }, auth(h.admin)));
    expect(noCurrency.code).toBe(Code.InvalidArgument);
    const unsold = await failure(h.discounts.createPromotion({ name: "x", type: PromotionType.FREE_SHIPPING, currencyCode: "JPY" }, auth(h.admin)));
    expect(unsold).toMatchObject({ code: Code.InvalidArgument, reason: "UNSUPPORTED_CURRENCY", field: "currency_code" });
    const incomplete = await failure(h.discounts.redeemDiscounts({ orderId: uuidv7(), userId: uuidv7(), cart: snapshot([[100n, 1]]), expectedTotalDiscount: eur(0n) }, auth(h.order)));
    expect(incomplete.code).toBe(Code.InvalidArgument);
    const badLine = await failure(calc(snapshot([[100n, 0]])));
    expect(badLine).toMatchObject({ code: Code.InvalidArgument, field: "cart.lines[0].quantity" });
  });
});

describe("admin: promotions, rules, coupons", () => {
  it("creates, reads, updates, lists and deactivates promotions", async () => {
    const p = await promotion({
      type: PromotionType.FIXED_AMOUNT,
      value: { case: "amountOff", value: eur(500n) },
      currencyCode: "EUR",
      budget: eur(10_000n),
      isActive: false,
      rules: [{ ruleType: DiscountRuleType.MIN_SUBTOTAL, value: { case: "minSubtotal", value: eur(2000n) } }] as never,
    });
    expect(p).toMatchObject({ isActive: false, currencyCode: "EUR", usageCount: 0n, budgetUsed: eur(0n) });
    expect(p.rules).toHaveLength(1);
    const { promotion: got } = await h.discounts.getPromotion({ promotionId: p.id }, auth(h.admin));
    expect(got!.value).toEqual(p.value);

    const updated = await h.discounts.updatePromotion(
      { promotion: { id: p.id, name: "Renamed", priority: 7, isActive: true }, updateMask: { paths: ["name", "priority", "is_active"] } },
      auth(h.admin),
    );
    expect(updated.promotion).toMatchObject({ name: "Renamed", priority: 7, isActive: true });
    const wrongType = await failure(
      h.discounts.updatePromotion({ promotion: { id: p.id, value: { case: "percentOffBps", value: 10 } }, updateMask: { paths: ["percent_off_bps"] } }, auth(h.admin)),
    );
    expect(wrongType).toMatchObject({ code: Code.InvalidArgument, reason: "VALUE_TYPE_MISMATCH" });
    const otherCurrency = await failure(h.discounts.updatePromotion({ promotion: { id: p.id, budget: eur(1n, "USD") }, updateMask: { paths: ["budget"] } }, auth(h.admin)));
    expect(otherCurrency).toMatchObject({ code: Code.InvalidArgument, reason: "CURRENCY_MISMATCH" });
    expect((await failure(h.discounts.getPromotion({ promotionId: uuidv7() }, auth(h.admin)))).code).toBe(Code.NotFound);

    const off = await h.discounts.deactivatePromotion({ promotionId: p.id }, auth(h.admin));
    expect(off.promotion!.isActive).toBe(false);
    expect((await h.discounts.deactivatePromotion({ promotionId: p.id }, auth(h.admin))).promotion!.updatedAt).toEqual(off.promotion!.updatedAt);

    // Paging over a filtered list: every promotion once, in order.
    for (let i = 0; i < 5; i++) await promotion({ name: `Paged ${i}`, priority: i });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await h.discounts.listPromotions({ pageSize: 2, pageToken, nameContains: "paged", orderBy: "priority desc" }, auth(h.admin));
      seen.push(...page.promotions.map((x) => x.name));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(["Paged 4", "Paged 3", "Paged 2", "Paged 1", "Paged 0"]);
    const bad = await failure(h.discounts.listPromotions({ pageSize: 2, pageToken: "forged", nameContains: "paged" }, auth(h.admin)));
    expect(bad).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
    const token = (await h.discounts.listPromotions({ pageSize: 2, nameContains: "paged" }, auth(h.admin))).nextPageToken;
    const replayed = await failure(h.discounts.listPromotions({ pageSize: 2, pageToken: token, nameContains: "renamed" }, auth(h.admin)));
    expect(replayed).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN", field: "page_token" });
  });

  it("adds and removes rules, one per type, amounts in the promotion's currency", async () => {
    const p = await promotion({ currencyCode: "EUR" });
    const { rule, promotion: withRule } = await h.discounts.addDiscountRule(
      { promotionId: p.id, rule: { ruleType: DiscountRuleType.MIN_QUANTITY, value: { case: "minQuantity", value: 3 } } },
      auth(h.admin),
    );
    expect(withRule!.rules.map((r) => r.id)).toEqual([rule!.id]);
    const twice = await failure(h.discounts.addDiscountRule({ promotionId: p.id, rule: { ruleType: DiscountRuleType.MIN_QUANTITY, value: { case: "minQuantity", value: 2 } } }, auth(h.admin)));
    expect(twice).toMatchObject({ code: Code.AlreadyExists, reason: "RULE_TYPE_EXISTS" });
    const usd = await failure(
      h.discounts.addDiscountRule({ promotionId: p.id, rule: { ruleType: DiscountRuleType.MIN_SUBTOTAL, value: { case: "minSubtotal", value: eur(1n, "USD") } } }, auth(h.admin)),
    );
    expect(usd).toMatchObject({ code: Code.InvalidArgument, reason: "CURRENCY_MISMATCH" });
    const removed = await h.discounts.removeDiscountRule({ promotionId: p.id, ruleId: rule!.id }, auth(h.admin));
    expect(removed.promotion!.rules).toEqual([]);
    expect((await failure(h.discounts.removeDiscountRule({ promotionId: p.id, ruleId: rule!.id }, auth(h.admin)))).code).toBe(Code.NotFound);
  });

  it("coupon codes are unique in any letter case; GenerateCoupons makes unique codes once per key", async () => {
    const p = await promotion({ isAutomatic: false });
    const { coupon } = await h.discounts.createCoupon({ promotionId: p.id, code: "Summer-Sale", usageLimit: 5 }, auth(h.admin));
    expect(coupon).toMatchObject({ code: "SUMMER-SALE", isActive: true, timesUsed: 0, promotionName: p.name });
    expect(await failure(h.discounts.createCoupon({ promotionId: p.id, code: "summer-SALE" }, auth(h.admin)))).toMatchObject({ code: Code.AlreadyExists, reason: "CODE_TAKEN" });
    expect((await h.discounts.getCoupon({ lookup: { case: "code", value: "summer-sale" } }, auth(h.admin))).coupon!.id).toBe(coupon!.id);
    const auto = await promotion({ isAutomatic: true });
    expect(await failure(h.discounts.createCoupon({ promotionId: auto.id, code: "AUTOCODE" }, auth(h.admin)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "PROMOTION_IS_AUTOMATIC",
    });
    await h.discounts.deactivatePromotion({ promotionId: auto.id }, auth(h.admin));

    const request = { promotionId: p.id, count: 200, prefix: "nl24-", randomLength: 8, usageLimit: 1, idempotencyKey: `gen-${uuidv7()}` };
    const { coupons } = await h.discounts.generateCoupons(request, auth(h.admin));
    expect(coupons).toHaveLength(200);
    expect(new Set(coupons.map((c) => c.code)).size).toBe(200);
    for (const c of coupons) expect(c.code).toMatch(new RegExp(`^NL24-[${codeAlphabet}]{8}$`));
    const retry = await h.discounts.generateCoupons(request, auth(h.admin));
    expect(retry.coupons.map((c) => c.id)).toEqual(coupons.map((c) => c.id));
    expect(await failure(h.discounts.generateCoupons({ ...request, count: 3 }, auth(h.admin)))).toMatchObject({ code: Code.AlreadyExists, reason: "IDEMPOTENCY_KEY_REUSED" });

    const listed: string[] = [];
    let pageToken = "";
    do {
      const page = await h.discounts.listCoupons({ promotionId: p.id, codePrefix: "nl24-", orderBy: "code asc", pageSize: 100, pageToken }, auth(h.admin));
      listed.push(...page.coupons.map((c) => c.code));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(listed).toEqual(coupons.map((c) => c.code).sort());

    const limited = await h.discounts.updateCoupon({ coupon: { id: coupon!.id, usageLimit: 2, isActive: false }, updateMask: { paths: ["usage_limit", "is_active"] } }, auth(h.admin));
    expect(limited.coupon).toMatchObject({ usageLimit: 2, isActive: false });
  });

  // Called as service.ts calls it, with a random source that draws a code someone else is creating:
  // random codes collide too rarely to force this through the contract.
  it("GenerateCoupons draws again when a code it found unused is created concurrently before its insert", async () => {
    const p = await promotion({ isAutomatic: false });
    const suffix = `${Date.now().toString(36).toUpperCase()}`.padEnd(8, "X").slice(0, 8);
    const [taken, free] = [`RACE-A${suffix}`, `RACE-B${suffix}`];
    // A CreateCoupon of `taken` that has not committed yet: GenerateCoupons' check does not see it, its insert waits.
    const other = new pg.Client({ connectionString: h.mesh.services.discount!.ctx.config.databaseUrl });
    await other.connect();
    try {
      await other.query("begin");
      const otherId = uuidv7();
      await other.query("insert into coupons (id, code, promotion_id) values ($1, $2, $3)", [otherId, taken, p.id]);
      const otherPid = (await other.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
      const draws: string[] = [];
      const draw = (prefix: string) => (draws.push(draws.length === 0 ? taken : free), draws.at(-1)!.replace(/^RACE-/, prefix));
      const request = create(GenerateCouponsRequestSchema, { promotionId: p.id, count: 1, prefix: "race-", randomLength: 9, idempotencyKey: `race-${uuidv7()}` });
      const generated = generateCoupons(h.mesh.services.discount!.ctx.orm.em.fork(), request, draw);
      generated.catch(() => undefined);
      await eventually(async () => ((await h.sql("select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid))", [otherPid])).length > 0 ? true : undefined), 10_000, "the batch's insert waiting on the other transaction");
      await other.query("commit");

      const { coupons } = await generated;
      expect(draws).toEqual([taken, free]);
      expect(coupons.map((c) => c.code)).toEqual([free]);
      expect((await h.discounts.getCoupon({ lookup: { case: "code", value: taken } }, auth(h.admin))).coupon!.id).toBe(otherId);
      // The batch drawn again keeps its key: a retry of the call answers the same coupons.
      expect((await generateCoupons(h.mesh.services.discount!.ctx.orm.em.fork(), request, draw)).coupons.map((c) => c.id)).toEqual(coupons.map((c) => c.id));
    } finally {
      await other.end();
    }
  });
});

describe("CalculateDiscounts: types and rules through the contract", () => {
  it("applies each type with its rules, explains what did not apply, and allocates exactly", async () => {
    const cur = only("GBP");
    const category = uuidv7();
    const parent = uuidv7();
    const percent = await promotion({ ...cur, isAutomatic: true, stackable: true, priority: 30, value: { case: "percentOffBps", value: 1000 }, rules: [{ ruleType: DiscountRuleType.CATEGORY_IDS, value: { case: "categoryIds", value: { ids: [parent] } } }] as never });
    const b2g1 = await promotion({ ...cur, isAutomatic: true, stackable: true, priority: 20, type: PromotionType.BUY_X_GET_Y, value: { case: "buyXGetY", value: { buyQuantity: 2, getQuantity: 1, getDiscountBps: 10_000 } } });
    const ship = await promotion({ ...cur, isAutomatic: true, stackable: true, priority: 10, type: PromotionType.FREE_SHIPPING, value: { case: undefined }, rules: [{ ruleType: DiscountRuleType.MIN_SUBTOTAL, value: { case: "minSubtotal", value: eur(4000n, "GBP") } }] as never });
    const firstOrder = await promotion({ ...cur, isAutomatic: true, stackable: true, priority: 5, type: PromotionType.FIXED_AMOUNT, value: { case: "amountOff", value: eur(100n, "GBP") }, rules: [{ ruleType: DiscountRuleType.FIRST_ORDER, value: { case: "firstOrder", value: true } }] as never });

    // A line in a subcategory (the snapshot lists ancestors too), three cheap units for buy-2-get-1.
    const cart = snapshot(
      [
        [3000n, 1, { categoryIds: [category, parent] }],
        [500n, 3],
      ],
      { currencyCode: "GBP", shippingAmount: eur(499n, "GBP"), isFirstOrder: false },
    );
    const r = await calc(cart);
    expect(r.discounts.map((d) => d.promotionId)).toEqual([percent.id, b2g1.id, ship.id]);
    expect(r.discounts.map((d) => d.amount!.amountMinor)).toEqual([300n, 500n, 499n]);
    expect(r.discounts[0]!.allocations).toEqual([expect.objectContaining({ lineId: "line-1", amount: eur(300n, "GBP") })]);
    // Buy 2 get 1 over units 2700 (what the percentage left) 500 500 500: the third unit (500) is free.
    expect(r.discounts[1]!.allocations.map((a) => [a.lineId, a.amount!.amountMinor])).toEqual([["line-2", 500n]]);
    expect(r).toMatchObject({ subtotal: eur(4500n, "GBP"), itemsDiscountTotal: eur(800n, "GBP"), shippingDiscountTotal: eur(499n, "GBP"), totalDiscount: eur(1299n, "GBP"), freeShipping: true });
    expect(r.skippedPromotions.map((s) => [s.promotionId, s.reason])).toEqual([[firstOrder.id, CouponRejectionReason.FIRST_ORDER_ONLY]]);
    for (const d of r.discounts) expect(d.allocations.reduce((s, a) => s + a.amount!.amountMinor, 0n)).toBe(d.freeShipping ? 0n : d.amount!.amountMinor);

    // Below the min subtotal, no free shipping; other currencies see none of these.
    const small = await calc(snapshot([[1000n, 1]], { currencyCode: "GBP", isFirstOrder: true }));
    expect(small.discounts.map((d) => d.promotionId)).toEqual([firstOrder.id]);
    expect(small.skippedPromotions.find((s) => s.promotionId === b2g1.id)?.reason).toBe(CouponRejectionReason.MIN_QUANTITY_NOT_MET);
    expect(small.skippedPromotions.find((s) => s.promotionId === ship.id)?.reason).toBe(CouponRejectionReason.MIN_SUBTOTAL_NOT_MET);
    expect((await calc(snapshot([[1000n, 3]], { currencyCode: "USD" }))).discounts.filter((d) => [percent.id, b2g1.id, ship.id].includes(d.promotionId))).toEqual([]);
    for (const p of [percent, b2g1, ship, firstOrder]) await h.discounts.deactivatePromotion({ promotionId: p.id }, auth(h.admin));
  });

  it("coupon codes: stacking, priority and customer rules", async () => {
    const cur = only("USD");
    const exclusive = await promotion({ ...cur, isAutomatic: true, stackable: false, priority: 50, value: { case: "percentOffBps", value: 2000 } });
    const vip = await promotion({ ...cur, isAutomatic: false, stackable: true, priority: 10, rules: [{ ruleType: DiscountRuleType.CUSTOMER_IDS, value: { case: "customerIds", value: { ids: [h.customerId] } } }] as never });
    const code = await couponFor(vip.id);
    const cart = snapshot([[1000n, 1]], { currencyCode: "USD", couponCodes: [code.code.toLowerCase()] });
    const blocked = await calc(cart, h.customerId);
    expect(blocked.discounts.map((d) => d.promotionId)).toEqual([exclusive.id]);
    expect(blocked.rejectedCoupons).toEqual([expect.objectContaining({ code: code.code.toLowerCase(), reason: CouponRejectionReason.NOT_COMBINABLE })]);

    await h.discounts.deactivatePromotion({ promotionId: exclusive.id }, auth(h.admin));
    const ok = await calc(cart, h.customerId);
    expect(ok.discounts).toEqual([expect.objectContaining({ promotionId: vip.id, couponCode: code.code, amount: eur(100n, "USD") })]);
    expect((await calc(cart)).rejectedCoupons[0]!.reason).toBe(CouponRejectionReason.SIGN_IN_REQUIRED);
    expect((await calc(cart, uuidv7())).rejectedCoupons[0]!.reason).toBe(CouponRejectionReason.CUSTOMER_NOT_ELIGIBLE);
    await h.discounts.deactivatePromotion({ promotionId: vip.id }, auth(h.admin));
  });
});

describe("CalculateDiscounts: product, quantity and date rules, determinism", () => {
  const of = (r: Awaited<ReturnType<typeof calc>>, promotionId: string) => r.discounts.find((d) => d.promotionId === promotionId);

  it("a product_ids rule discounts only its products' lines; min_quantity counts the eligible units", async () => {
    const shirt = uuidv7();
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR", rules: [{ ruleType: DiscountRuleType.PRODUCT_IDS, value: { case: "productIds", value: { ids: [shirt] } } }] as never });
    const c = await couponFor(p.id);
    const both = await calc(snapshot([[1000n, 2, { productId: shirt }], [2000n, 1]], { couponCodes: [c.code] }));
    expect(of(both, p.id)).toMatchObject({ amount: eur(200n), allocations: [{ lineId: "line-1", amount: eur(200n) }] });
    const other = await calc(snapshot([[2000n, 1]], { couponCodes: [c.code] }));
    expect(other.rejectedCoupons).toEqual([expect.objectContaining({ reason: CouponRejectionReason.NOT_APPLICABLE_TO_ITEMS })]);

    const q = await promotion({
      isAutomatic: false,
      currencyCode: "EUR",
      type: PromotionType.FIXED_AMOUNT,
      value: { case: "amountOff", value: eur(300n) },
      rules: [
        { ruleType: DiscountRuleType.PRODUCT_IDS, value: { case: "productIds", value: { ids: [shirt] } } },
        { ruleType: DiscountRuleType.MIN_QUANTITY, value: { case: "minQuantity", value: 3 } },
      ] as never,
    });
    const qc = await couponFor(q.id);
    // Two shirts and five other units: 7 units in the cart, but only 2 eligible.
    const short = await calc(snapshot([[1000n, 2, { productId: shirt }], [100n, 5]], { couponCodes: [qc.code] }));
    expect(short.rejectedCoupons).toEqual([expect.objectContaining({ reason: CouponRejectionReason.MIN_QUANTITY_NOT_MET })]);
    const met = await calc(snapshot([[1000n, 3, { productId: shirt }], [100n, 5]], { couponCodes: [qc.code] }));
    expect(of(met, q.id)).toMatchObject({ amount: eur(300n), allocations: [{ lineId: "line-1", amount: eur(300n) }] });
  });

  it("start and end dates: not yet, over, and live once the window opens", async () => {
    const hour = 3_600_000;
    const at = (ms: number) => timestampFromMs(Date.now() + ms);
    const later = await promotion({ isAutomatic: false, currencyCode: "EUR", startsAt: at(hour) });
    const laterCode = await couponFor(later.id);
    const over = await promotion({ isAutomatic: false, currencyCode: "EUR", startsAt: at(-2 * hour), endsAt: at(-hour) });
    const overCode = await couponFor(over.id);
    const cart = (code: string) => snapshot([[1000n, 1]], { couponCodes: [code] });
    expect((await calc(cart(laterCode.code))).rejectedCoupons[0]!.reason).toBe(CouponRejectionReason.NOT_STARTED);
    expect((await calc(cart(overCode.code))).rejectedCoupons[0]!.reason).toBe(CouponRejectionReason.EXPIRED);
    // A coupon's own window counts too, inside a live promotion.
    const live = await promotion({ isAutomatic: false, currencyCode: "EUR" });
    const notYet = await couponFor(live.id, { startsAt: at(hour) });
    expect((await calc(cart(notYet.code))).rejectedCoupons[0]!.reason).toBe(CouponRejectionReason.NOT_STARTED);

    // An automatic promotion before its start is no candidate at all; it applies once starts_at is moved to the past.
    const customer = uuidv7();
    const auto = await promotion({ isAutomatic: true, stackable: true, currencyCode: "EUR", startsAt: at(hour), rules: [{ ruleType: DiscountRuleType.CUSTOMER_IDS, value: { case: "customerIds", value: { ids: [customer] } } }] as never });
    const before = await calc(snapshot([[1000n, 1]]), customer);
    expect(of(before, auto.id)).toBeUndefined();
    expect(before.skippedPromotions.find((x) => x.promotionId === auto.id)).toBeUndefined();
    await h.discounts.updatePromotion({ promotion: { id: auto.id, startsAt: at(-hour) }, updateMask: { paths: ["starts_at"] } }, auth(h.admin));
    expect(of(await calc(snapshot([[1000n, 1]]), customer), auto.id)).toMatchObject({ amount: eur(100n) });
    await h.discounts.deactivatePromotion({ promotionId: auto.id }, auth(h.admin));
  });

  it("is deterministic: the same snapshot, in any line order, gives the same answer", async () => {
    const customer = uuidv7();
    const forHer = [{ ruleType: DiscountRuleType.CUSTOMER_IDS, value: { case: "customerIds", value: { ids: [customer] } } }] as never;
    const ps = [
      await promotion({ isAutomatic: true, stackable: true, priority: 3, currencyCode: "EUR", value: { case: "percentOffBps", value: 333 }, rules: forHer }),
      await promotion({ isAutomatic: true, stackable: true, priority: 3, currencyCode: "EUR", value: { case: "percentOffBps", value: 777 }, rules: forHer }),
      await promotion({ isAutomatic: true, stackable: true, priority: 1, currencyCode: "EUR", type: PromotionType.FIXED_AMOUNT, value: { case: "amountOff", value: eur(101n) }, rules: forHer }),
    ];
    const cart = snapshot([[333n, 3], [1001n, 1], [7n, 9]]);
    const view = (r: Awaited<ReturnType<typeof calc>>) =>
      r.discounts.map((d) => [d.promotionId, d.amount!.amountMinor, d.allocations.map((a) => [a.lineId, a.amount!.amountMinor]).sort()]);
    const first = await calc(cart, customer);
    expect(first.discounts).toHaveLength(3);
    expect(view(await calc(cart, customer))).toEqual(view(first));
    expect(view(await calc({ ...cart, lines: [...cart.lines!].reverse() }, customer))).toEqual(view(first));
    for (const d of first.discounts) expect(d.allocations.reduce((s, a) => s + a.amount!.amountMinor, 0n)).toBe(d.amount!.amountMinor);
    for (const p of ps) await h.discounts.deactivatePromotion({ promotionId: p.id }, auth(h.admin));
  });
});

describe("ValidateCoupon", () => {
  it("checks the code alone or against a cart, for guests and customers", async () => {
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR", description: "Ten off", rules: [{ ruleType: DiscountRuleType.MIN_SUBTOTAL, value: { case: "minSubtotal", value: eur(5000n) } }] as never });
    const c = await couponFor(p.id);
    const alone = await h.discounts.validateCoupon({ code: `  ${c.code.toLowerCase()} ` }, {});
    expect(alone).toMatchObject({ valid: true, offer: { code: c.code, name: p.name, description: "Ten off", percentOffBps: 1000 } });
    const short = await h.discounts.validateCoupon({ code: c.code, cart: snapshot([[1000n, 1]]) }, auth(h.customer));
    expect(short).toMatchObject({ valid: false, reason: CouponRejectionReason.MIN_SUBTOTAL_NOT_MET, minSubtotal: eur(5000n) });
    expect(short.offer?.code).toBe(c.code);
    const good = await h.discounts.validateCoupon({ code: c.code, cart: snapshot([[6000n, 1]]) }, auth(h.customer));
    expect(good).toMatchObject({ valid: true, discount: { couponCode: c.code, amount: eur(600n) } });
    const unknown = await h.discounts.validateCoupon({ code: "NO-SUCH-CODE" }, {});
    expect(unknown).toMatchObject({ valid: false, reason: CouponRejectionReason.NOT_FOUND });
    expect(unknown.offer).toBeUndefined();
  });
});

describe("ValidateCoupon and first orders", () => {
  it("refuses a first-order code to a signed-in customer once order.created announced an order of theirs (ValidateCoupon, Cart's CalculateDiscounts), and keeps it for guests", async () => {
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR", rules: [{ ruleType: DiscountRuleType.FIRST_ORDER, value: { case: "firstOrder", value: true } }] as never });
    const c = await couponFor(p.id);
    const customerId = uuidv7();
    const customer = auth(await h.issuer.user(customerId));
    const check = (init: { headers?: Record<string, string> }) => h.discounts.validateCoupon({ code: c.code, cart: snapshot([[1000n, 1]]) }, init);
    expect(await check(customer)).toMatchObject({ valid: true, discount: { amount: eur(100n) } });

    const eventId = uuidv7();
    const payload = toBinary(OrderCreatedSchema, create(OrderCreatedSchema, { eventId, orderId: uuidv7(), userId: customerId, currencyCode: "EUR" }));
    const js = jetstream(h.nc);
    await eventually(() => js.publish(subjectOf(OrderCreatedSchema), payload, { msgID: eventId }).catch(() => undefined), 10_000, "ORDER_EVENTS stream");
    // A redelivery of the same event (another message id) changes nothing.
    await js.publish(subjectOf(OrderCreatedSchema), payload, { msgID: uuidv7() });
    const refused = await eventually(async () => {
      const r = await check(customer);
      return r.valid ? undefined : r;
    }, 10_000, "order.created applied");
    expect(refused).toMatchObject({ valid: false, reason: CouponRejectionReason.FIRST_ORDER_ONLY });
    expect(refused.offer?.code).toBe(c.code);
    // Cart's snapshots leave is_first_order unset: the cart no longer shows the discount either. A caller that knows (checkout) decides.
    const cart = snapshot([[1000n, 1]], { couponCodes: [c.code] });
    expect((await calc(cart, customerId)).rejectedCoupons).toEqual([expect.objectContaining({ reason: CouponRejectionReason.FIRST_ORDER_ONLY })]);
    expect((await calc({ ...cart, isFirstOrder: true }, customerId)).discounts).toEqual([expect.objectContaining({ promotionId: p.id, amount: eur(100n) })]);
    expect((await calc(cart)).rejectedCoupons).toEqual([]);
    // A guest is not known: the rule is checked at checkout. Another customer has not ordered.
    expect((await check({})).valid).toBe(true);
    expect((await check(auth(await h.issuer.user(uuidv7())))).valid).toBe(true);
    expect((await h.sql<{ n: number }>("select count(*)::int as n from customer_orders where user_id = $1", [customerId]))[0]!.n).toBe(1);
  });
});

describe("RedeemDiscounts and ReleaseRedemption", () => {
  it("a budget of N minor units with 200 concurrent redemptions spends at most N", async () => {
    const budget = 1000n;
    const p = await promotion({ ...only("EUR"), isAutomatic: true, stackable: true, priority: 1000, budget: eur(budget), value: { case: "percentOffBps", value: 1000 }, rules: [{ ruleType: DiscountRuleType.CUSTOMER_IDS, value: { case: "customerIds", value: { ids: [h.customerId] } } }] as never });
    const cart = snapshot([[1000n, 1]]);
    const results = await Promise.allSettled(Array.from({ length: 200 }, () => redeem(uuidv7(), h.customerId, cart, 100n)));
    const ok = results.filter((r) => r.status === "fulfilled");
    const failed = await Promise.all(results.filter((r) => r.status === "rejected").map((r) => failure(Promise.reject(r.reason))));
    for (const f of failed) expect([f.code, f.reason]).toEqual([Code.FailedPrecondition, "DISCOUNT_CHANGED"]);
    expect(ok.length * 100).toBeLessThanOrEqual(Number(budget));
    const { promotion: after } = await h.discounts.getPromotion({ promotionId: p.id }, auth(h.admin));
    expect(after!.budgetUsed).toEqual(eur(BigInt(ok.length * 100)));
    expect(after!.budgetUsed).toEqual(eur(budget));
    expect(after!.usageCount).toBe(BigInt(ok.length));
    const usage = await h.discounts.listPromotionUsage({ promotionId: p.id, pageSize: 100 }, auth(h.admin));
    expect(usage.usages.reduce((s, u) => s + u.discountAmount!.amountMinor, 0n)).toBe(budget);
    // Used up: no longer live, and the exhaustion was announced once.
    const spent = await calc(cart, h.customerId);
    expect(spent.discounts.find((d) => d.promotionId === p.id)).toBeUndefined();
    // Explained to support and admins as the contract lists it (skipped_promotions: "budget used up").
    expect(spent.skippedPromotions.find((s) => s.promotionId === p.id)?.reason).toBe(CouponRejectionReason.BUDGET_EXHAUSTED);
    const exhausted = await eventually(async () => {
      const events = (await discountEvents(h, PromotionBudgetExhaustedSchema)).filter((e) => e.promotionId === p.id);
      return events.length > 0 ? events : undefined;
    });
    expect(exhausted).toHaveLength(1);
    expect(exhausted[0]!.budgetUsed).toEqual(eur(budget));
    // Not live any more; a budget below what was given is refused; raising it makes the promotion apply again.
    const live = async () => (await h.discounts.listPromotions({ liveOnly: true, nameContains: p.name, pageSize: 100 }, auth(h.admin))).promotions.map((x) => x.id);
    expect(await live()).not.toContain(p.id);
    expect(await failure(h.discounts.updatePromotion({ promotion: { id: p.id, budget: eur(budget - 1n) }, updateMask: { paths: ["budget"] } }, auth(h.admin)))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "BUDGET_BELOW_USED",
    });
    await h.discounts.updatePromotion({ promotion: { id: p.id, budget: eur(budget + 100n) }, updateMask: { paths: ["budget"] } }, auth(h.admin));
    expect(await live()).toContain(p.id);
    expect((await calc(cart, h.customerId)).discounts.find((d) => d.promotionId === p.id)?.amount).toEqual(eur(100n));
    await h.discounts.deactivatePromotion({ promotionId: p.id }, auth(h.admin));
  });

  it("a coupon limited to one use per customer succeeds once among 20 parallel redemptions", async () => {
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR" });
    const c = await couponFor(p.id, { usageLimitPerUser: 1 });
    const cart = snapshot([[2000n, 1]], { couponCodes: [c.code] });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => redeem(uuidv7(), h.customerId, cart, 200n)));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results.filter((x) => x.status === "rejected")) {
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({ code: Code.FailedPrecondition, reason: "USER_LIMIT_REACHED", metadata: { code: c.code } });
    }
    expect((await h.discounts.getCoupon({ lookup: { case: "couponId", value: c.id } }, auth(h.admin))).coupon!.timesUsed).toBe(1);
    // Another customer may still use it.
    await redeem(uuidv7(), uuidv7(), cart, 200n);
  });

  it("a coupon's total usage limit holds under concurrency", async () => {
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR" });
    const c = await couponFor(p.id, { usageLimit: 3 });
    const cart = snapshot([[2000n, 1]], { couponCodes: [c.code] });
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => redeem(uuidv7(), uuidv7(), cart, 200n)));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    for (const r of results.filter((x) => x.status === "rejected")) {
      expect((await failure(Promise.reject((r as PromiseRejectedResult).reason))).reason).toBe("USAGE_LIMIT_REACHED");
    }
    expect(await failure(h.discounts.updateCoupon({ coupon: { id: c.id, usageLimit: 2 }, updateMask: { paths: ["usage_limit"] } }, auth(h.admin)))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "USAGE_LIMIT_BELOW_USED",
    });
    const exhaustedOnly = await h.discounts.listCoupons({ promotionId: p.id, exhaustedOnly: true }, auth(h.admin));
    expect(exhaustedOnly.coupons.map((x) => [x.id, x.timesUsed])).toEqual([[c.id, 3]]);
  });

  it("is idempotent per order; a release gives usage and budget back once; a new order can redeem again", async () => {
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR", budget: eur(500n) });
    const c = await couponFor(p.id, { usageLimit: 1 });
    const cart = snapshot([[3000n, 1]], { couponCodes: [c.code] });
    const orderId = uuidv7();
    const user = uuidv7();
    // Concurrent retries of one order count once.
    const [first, ...retries] = await Promise.all(Array.from({ length: 5 }, () => redeem(orderId, user, cart, 300n)));
    for (const r of retries) expect(r.redemption).toEqual(first!.redemption);
    expect(first!.redemption).toMatchObject({ orderId, status: RedemptionStatus.REDEEMED, totalDiscount: eur(300n) });
    expect(await failure(redeem(orderId, user, cart, 200n))).toMatchObject({ code: Code.AlreadyExists, reason: "REDEMPTION_CONFLICT" });
    expect(await failure(redeem(orderId, uuidv7(), cart, 300n))).toMatchObject({ code: Code.AlreadyExists, reason: "REDEMPTION_CONFLICT" });
    expect(await failure(redeem(uuidv7(), user, cart, 300n))).toMatchObject({ code: Code.FailedPrecondition, reason: "USAGE_LIMIT_REACHED" });
    let state = (await h.discounts.getPromotion({ promotionId: p.id }, auth(h.admin))).promotion!;
    expect([state.budgetUsed, state.usageCount]).toEqual([eur(300n), 1n]);

    const releases = await Promise.all(Array.from({ length: 3 }, () => h.discounts.releaseRedemption({ orderId, reason: "order_cancelled" }, auth(h.order))));
    for (const r of releases) expect(r.redemption).toMatchObject({ orderId, status: RedemptionStatus.RELEASED });
    state = (await h.discounts.getPromotion({ promotionId: p.id }, auth(h.admin))).promotion!;
    expect([state.budgetUsed, state.usageCount]).toEqual([eur(0n), 0n]);
    expect((await h.discounts.getCoupon({ lookup: { case: "couponId", value: c.id } }, auth(h.admin))).coupon!.timesUsed).toBe(0);
    expect(await failure(redeem(orderId, user, cart, 300n))).toMatchObject({ code: Code.FailedPrecondition, reason: "REDEMPTION_RELEASED" });
    const usage = await h.discounts.listCouponUsage({ couponId: c.id, includeReleased: true }, auth(h.admin));
    expect(usage.usages).toHaveLength(1);
    expect(usage.usages[0]!.releasedAt).toBeDefined();
    expect((await h.discounts.listCouponUsage({ couponId: c.id }, auth(h.admin))).usages).toEqual([]);

    // The code works again for a new order.
    const again = await redeem(uuidv7(), user, cart, 300n);
    expect(again.redemption!.discounts[0]).toMatchObject({ couponId: c.id, amount: eur(300n) });
    // Releasing an order that never redeemed succeeds and changes nothing.
    expect((await h.discounts.releaseRedemption({ orderId: uuidv7() }, auth(h.order))).redemption).toBeUndefined();

    const redeemed = await eventually(async () => {
      const events = (await discountEvents(h, DiscountRedeemedSchema)).filter((e) => e.orderId === orderId);
      return events.length > 0 ? events : undefined;
    });
    expect(redeemed).toHaveLength(1);
    expect(redeemed[0]).toMatchObject({ userId: user, currencyCode: "EUR", totalDiscount: eur(300n), discounts: [expect.objectContaining({ couponCode: c.code })] });
    const released = await eventually(async () => {
      const events = (await discountEvents(h, DiscountReleasedSchema)).filter((e) => e.orderId === orderId);
      return events.length > 0 ? events : undefined;
    });
    expect(released).toHaveLength(1);
    expect(released[0]).toMatchObject({ reason: "order_cancelled", totalDiscount: eur(300n) });
  });

  it("fails with DISCOUNT_CHANGED when the quote is stale, and records nothing", async () => {
    const p = await promotion({ isAutomatic: false, currencyCode: "EUR" });
    const c = await couponFor(p.id);
    const cart = snapshot([[1000n, 1]], { couponCodes: [c.code] });
    const orderId = uuidv7();
    expect(await failure(redeem(orderId, uuidv7(), cart, 50n))).toMatchObject({ code: Code.FailedPrecondition, reason: "DISCOUNT_CHANGED", metadata: { total_discount_minor: "100" } });
    expect((await h.discounts.listPromotionUsage({ orderId }, auth(h.admin))).usages).toEqual([]);
    // Nothing applies and nothing was expected: a REDEEMED redemption without discounts, nothing recorded.
    const none = await redeem(orderId, uuidv7(), snapshot([[1000n, 1]], { currencyCode: "GBP" }), 0n);
    expect(none.redemption).toMatchObject({ status: RedemptionStatus.REDEEMED, discounts: [] });
    expect((await h.discounts.releaseRedemption({ orderId }, auth(h.order))).redemption).toBeUndefined();
  });
});
