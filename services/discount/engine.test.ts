/**
 * The discount engine alone (a pure function, no servers): every type, rule,
 * the order and stacking steps, rounding, and the allocation invariants over
 * many random carts. The service tests (discount.test.ts) run the same engine
 * through the contract.
 */
import { describe, expect, it } from "vitest";
import { PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { allocate, calculateDiscounts, type EngineCart, type EngineCoupon, type EngineInput, type EngineLine, type EnginePromotion, Reason, roundHalfUp } from "./engine.ts";

const now = new Date("2026-06-01T12:00:00Z");
const P1 = "00000000-0000-7000-8000-000000000001";
const P2 = "00000000-0000-7000-8000-000000000002";
const C1 = "00000000-0000-7000-8000-0000000000c1";
const U1 = "00000000-0000-7000-8000-0000000000a1";

let seq = 0;
function promo(init: Partial<EnginePromotion> = {}): EnginePromotion {
  seq++;
  return {
    id: `00000000-0000-7000-8000-${String(seq).padStart(12, "0")}`,
    name: `promo ${seq}`,
    type: PromotionType.PERCENTAGE,
    percentOffBps: 1000,
    currency: "",
    isAutomatic: true,
    priority: 0,
    stackable: true,
    budgetUsed: 0n,
    isActive: true,
    rules: {},
    ...init,
  };
}

const line = (lineId: string, unitPrice: bigint, quantity = 1, init: Partial<EngineLine> = {}): EngineLine => ({
  lineId,
  productId: P1,
  categoryIds: [],
  quantity,
  unitPrice,
  ...init,
});

const cart = (lines: EngineLine[], init: Partial<EngineCart> = {}): EngineCart => ({ currency: "EUR", lines, couponCodes: [], ...init });

function run(c: EngineCart, automatic: EnginePromotion[], coupons: EngineCoupon[] = [], userId = "") {
  const input: EngineInput = { cart: c, userId, automatic, coupons: new Map(coupons.map((x) => [x.code, x])), now };
  return calculateDiscounts(input);
}

function coupon(promotion: EnginePromotion, init: Partial<EngineCoupon> = {}): EngineCoupon {
  return { id: C1, code: "SAVE10", promotion: { ...promotion, isAutomatic: false }, usageLimit: 0, usageLimitPerUser: 0, timesUsed: 0, userUses: 0, isActive: true, ...init };
}

/** The invariants every result keeps. */
function checkInvariants(c: EngineCart, r: ReturnType<typeof run>) {
  const lineAmount = new Map(c.lines.map((l) => [l.lineId, l.unitPrice * BigInt(l.quantity)]));
  const onLine = new Map<string, bigint>();
  for (const a of r.applied) {
    expect(a.amount >= 0n).toBe(true);
    if (a.freeShipping) {
      expect(a.allocations).toEqual([]);
      continue;
    }
    expect(a.allocations.reduce((s, x) => s + x.amount, 0n)).toBe(a.amount);
    for (const x of a.allocations) {
      expect(x.amount >= 0n).toBe(true);
      onLine.set(x.lineId, (onLine.get(x.lineId) ?? 0n) + x.amount);
    }
  }
  for (const [id, total] of onLine) expect(total <= lineAmount.get(id)!).toBe(true);
  expect(r.itemsDiscount <= r.subtotal).toBe(true);
  expect(r.total).toBe(r.itemsDiscount + r.shippingDiscount);
}

describe("amounts", () => {
  it("percentage: rounded half up, allocated by line amount with the largest remainder", () => {
    // 10% of 3 x 0.33 + 0.34 = 1.33 -> 0.133 -> 0.13
    const c = cart([line("a", 33n), line("b", 33n), line("c", 33n), line("d", 34n)]);
    const r = run(c, [promo({ percentOffBps: 1000 })]);
    expect(r.total).toBe(13n);
    expect(r.applied[0]!.allocations.map((x) => x.amount)).toEqual([3n, 3n, 3n, 4n]);
    checkInvariants(c, r);
    expect(roundHalfUp(5n, 10n)).toBe(1n);
    expect(roundHalfUp(4n, 10n)).toBe(0n);
  });

  it("fixed amount: once per order, at most the eligible amount", () => {
    const c = cart([line("a", 1000n, 2), line("b", 500n)]);
    const r = run(c, [promo({ type: PromotionType.FIXED_AMOUNT, percentOffBps: undefined, amountOff: 1000n, currency: "EUR" })]);
    expect(r.total).toBe(1000n);
    expect(r.applied[0]!.allocations).toEqual([
      { lineId: "a", amount: 800n },
      { lineId: "b", amount: 200n },
    ]);
    const small = cart([line("a", 300n)]);
    expect(run(small, [promo({ type: PromotionType.FIXED_AMOUNT, percentOffBps: undefined, amountOff: 1000n, currency: "EUR" })]).total).toBe(300n);
  });

  it("free shipping: the whole shipping amount, zero while unknown", () => {
    const fs = promo({ type: PromotionType.FREE_SHIPPING, percentOffBps: undefined });
    const known = run(cart([line("a", 1000n)], { shipping: 495n }), [fs]);
    expect(known).toMatchObject({ shippingDiscount: 495n, itemsDiscount: 0n, total: 495n, freeShipping: true });
    expect(known.applied[0]!.allocations).toEqual([]);
    const unknown = run(cart([line("a", 1000n)]), [fs]);
    expect(unknown).toMatchObject({ shippingDiscount: 0n, total: 0n, freeShipping: true });
  });

  it("buy 2 get 1: the cheapest unit of every full group, max_applications", () => {
    const b2g1 = { buy: 2, get: 1, discountBps: 10_000, maxApplications: 0 };
    const c = cart([line("a", 1000n, 2), line("b", 600n, 1), line("c", 300n, 3)]);
    // units 1000 1000 600 | 300 300 300 -> free: 600 and 300
    const r = run(c, [promo({ type: PromotionType.BUY_X_GET_Y, percentOffBps: undefined, buyXGetY: b2g1 })]);
    expect(r.total).toBe(900n);
    expect(r.applied[0]!.allocations).toEqual([
      { lineId: "b", amount: 600n },
      { lineId: "c", amount: 300n },
    ]);
    checkInvariants(c, r);
    const once = run(c, [promo({ type: PromotionType.BUY_X_GET_Y, percentOffBps: undefined, buyXGetY: { ...b2g1, maxApplications: 1 } })]);
    expect(once.total).toBe(600n);
    const half = run(cart([line("a", 999n, 3)]), [promo({ type: PromotionType.BUY_X_GET_Y, percentOffBps: undefined, buyXGetY: { ...b2g1, discountBps: 5000 } })]);
    expect(half.total).toBe(500n); // 499.5 rounded half up
    // Units are counted, not listed: 200 lines of 10000 units each.
    const big = cart(Array.from({ length: 200 }, (_, i) => line(`l${i}`, BigInt(100 + i), 10_000)));
    const many = run(big, [promo({ type: PromotionType.BUY_X_GET_Y, percentOffBps: undefined, buyXGetY: b2g1 })]);
    expect(many.applied[0]!.allocations.reduce((s, a) => s + a.amount, 0n)).toBe(many.total);
    expect(many.total).toBeGreaterThan(0n);
    const short = run(cart([line("a", 999n, 2)]), [promo({ type: PromotionType.BUY_X_GET_Y, percentOffBps: undefined, buyXGetY: b2g1 })]);
    expect(short.applied).toEqual([]);
    expect(short.skipped[0]!.reason).toBe(Reason.MIN_QUANTITY_NOT_MET);
  });

  it("max_discount caps a percentage; the remaining budget caps every type", () => {
    const c = cart([line("a", 10_000n)]);
    expect(run(c, [promo({ percentOffBps: 5000, maxDiscount: 1200n, currency: "EUR" })]).total).toBe(1200n);
    expect(run(c, [promo({ percentOffBps: 5000, budget: 1000n, budgetUsed: 700n, currency: "EUR" })]).total).toBe(300n);
    const spent = run(c, [promo({ percentOffBps: 5000, budget: 1000n, budgetUsed: 1000n, currency: "EUR" })]);
    expect(spent.applied).toEqual([]);
    // Explained, not silently left out: support sees why the promotion stopped.
    expect(spent.skipped.map((x) => x.reason)).toEqual([Reason.BUDGET_EXHAUSTED]);
  });
});

describe("rules", () => {
  const cat = "00000000-0000-7000-8000-0000000000ca";
  const lines = [line("a", 1000n, 1, { productId: P1, categoryIds: [cat] }), line("b", 2000n, 1, { productId: P2 })];

  it("product and category rules choose the eligible lines (either one when both)", () => {
    expect(run(cart(lines), [promo({ rules: { productIds: [P2] } })]).applied[0]!.allocations).toEqual([{ lineId: "b", amount: 200n }]);
    expect(run(cart(lines), [promo({ rules: { categoryIds: [cat] } })]).applied[0]!.allocations).toEqual([{ lineId: "a", amount: 100n }]);
    expect(run(cart(lines), [promo({ rules: { categoryIds: [cat], productIds: [P2] } })]).total).toBe(300n);
    const none = run(cart(lines), [promo({ rules: { productIds: [C1] } })]);
    expect(none.skipped[0]!.reason).toBe(Reason.NOT_APPLICABLE_TO_ITEMS);
  });

  it("min subtotal, min quantity, first order and customer ids", () => {
    const minSub = run(cart(lines), [promo({ rules: { minSubtotal: 5000n }, currency: "EUR" })]);
    expect(minSub.skipped[0]).toMatchObject({ reason: Reason.MIN_SUBTOTAL_NOT_MET, minSubtotal: 5000n });
    expect(run(cart(lines), [promo({ rules: { minSubtotal: 3000n }, currency: "EUR" })]).total).toBe(300n);
    expect(run(cart(lines), [promo({ rules: { minQuantity: 3 } })]).skipped[0]!.reason).toBe(Reason.MIN_QUANTITY_NOT_MET);
    expect(run(cart(lines), [promo({ rules: { minQuantity: 2 } })]).total).toBe(300n);
    expect(run(cart(lines, { isFirstOrder: false }), [promo({ rules: { firstOrder: true } })]).skipped[0]!.reason).toBe(Reason.FIRST_ORDER_ONLY);
    expect(run(cart(lines), [promo({ rules: { firstOrder: true } })]).total).toBe(300n); // unknown: taken as met
    expect(run(cart(lines, { isFirstOrder: true }), [promo({ rules: { firstOrder: true } })]).total).toBe(300n);
    expect(run(cart(lines), [promo({ rules: { customerIds: [U1] } })]).skipped[0]!.reason).toBe(Reason.SIGN_IN_REQUIRED);
    expect(run(cart(lines), [promo({ rules: { customerIds: [U1] } })], [], P1).skipped[0]!.reason).toBe(Reason.CUSTOMER_NOT_ELIGIBLE);
    expect(run(cart(lines), [promo({ rules: { customerIds: [U1] } })], [], U1).total).toBe(300n);
  });

  it("a promotion in another currency is no candidate; a currency-free one applies everywhere", () => {
    expect(run(cart(lines), [promo({ currency: "USD" })]).applied).toEqual([]);
    expect(run(cart(lines, { currency: "GBP" }), [promo({ currency: "" })]).total).toBe(300n);
  });
});

describe("coupons", () => {
  const c = (codes: string[]) => cart([line("a", 1000n)], { couponCodes: codes });

  it("codes match in any case and report why they are refused", () => {
    const p = promo({ isAutomatic: false });
    expect(run(c([" save10 "]), [], [coupon(p)]).applied[0]!.coupon?.code).toBe("SAVE10");
    const reasons = (k: Partial<EngineCoupon>, userId = U1) => run(c(["SAVE10"]), [], [coupon(p, k)], userId).rejected[0]?.reason;
    expect(run(c(["NOPE"]), [], []).rejected[0]).toMatchObject({ code: "NOPE", reason: Reason.NOT_FOUND });
    expect(reasons({ isActive: false })).toBe(Reason.INACTIVE);
    expect(reasons({ startsAt: new Date(now.getTime() + 1000) })).toBe(Reason.NOT_STARTED);
    expect(reasons({ endsAt: now })).toBe(Reason.EXPIRED);
    expect(reasons({ usageLimit: 3, timesUsed: 3 })).toBe(Reason.USAGE_LIMIT_REACHED);
    expect(reasons({ usageLimitPerUser: 1, userUses: 1 })).toBe(Reason.USER_LIMIT_REACHED);
    expect(reasons({ usageLimitPerUser: 1, userUses: 1 }, "")).toBeUndefined(); // a guest: checked at redemption
    expect(reasons({ promotion: { ...p, isAutomatic: false, budget: 10n, budgetUsed: 10n, currency: "EUR" } })).toBe(Reason.BUDGET_EXHAUSTED);
    expect(reasons({ promotion: { ...p, isAutomatic: false, currency: "USD" } })).toBe(Reason.CURRENCY_MISMATCH);
    expect(reasons({ promotion: { ...p, isAutomatic: false, rules: { minSubtotal: 5000n } } })).toBe(Reason.MIN_SUBTOTAL_NOT_MET);
  });

  it("two codes of one promotion: the second is not combinable", () => {
    const p = promo({ isAutomatic: false });
    const r = run(c(["SAVE10", "OTHER"]), [], [coupon(p), coupon(p, { id: P2, code: "OTHER" })]);
    expect(r.applied).toHaveLength(1);
    expect(r.rejected).toEqual([expect.objectContaining({ code: "OTHER", reason: Reason.NOT_COMBINABLE })]);
  });
});

describe("order and stacking", () => {
  const c = cart([line("a", 10_000n)], { couponCodes: ["SAVE10"] });

  it("stackable promotions combine, each on what the earlier left, in priority order", () => {
    const first = promo({ priority: 10, percentOffBps: 5000 });
    const second = promo({ priority: 5, type: PromotionType.FIXED_AMOUNT, percentOffBps: undefined, amountOff: 1000n, currency: "EUR" });
    const r = run(c, [second, first]);
    expect(r.applied.map((a) => a.promotion.id)).toEqual([first.id, second.id]);
    expect(r.applied.map((a) => a.amount)).toEqual([5000n, 1000n]);
    // The other way round the fixed amount comes first and the percentage takes half of the rest.
    const swapped = run(c, [{ ...second, priority: 20 }, first]);
    expect(swapped.applied.map((a) => a.amount)).toEqual([1000n, 4500n]);
  });

  it("equal priority: the older starts_at first, then the id", () => {
    const older = promo({ priority: 1, startsAt: new Date("2026-01-01"), stackable: false });
    const newer = promo({ priority: 1, startsAt: new Date("2026-02-01"), stackable: false });
    expect(run(c, [newer, older]).applied[0]!.promotion.id).toBe(older.id);
    const a = promo({ priority: 1, stackable: false });
    const b = promo({ priority: 1, stackable: false });
    expect(run(c, [b, a]).applied[0]!.promotion.id).toBe(a.id);
  });

  it("a non-stackable promotion applies alone: first, or not at all", () => {
    const exclusive = promo({ priority: 10, stackable: false, percentOffBps: 2000 });
    const other = promo({ priority: 5 });
    const r = run(c, [exclusive, other]);
    expect(r.applied.map((a) => a.promotion.id)).toEqual([exclusive.id]);
    expect(r.skipped).toEqual([expect.objectContaining({ reason: Reason.NOT_COMBINABLE })]);
    const late = run(c, [promo({ priority: 1, stackable: false }), promo({ priority: 9 })]);
    expect(late.applied).toHaveLength(1);
    expect(late.skipped[0]!.reason).toBe(Reason.NOT_COMBINABLE);
    // A coupon left out this way is rejected as not combinable.
    const code = run(c, [exclusive], [coupon(promo({ priority: 0 }))]);
    expect(code.rejected[0]!.reason).toBe(Reason.NOT_COMBINABLE);
  });

  it("is deterministic: the same input in any order gives the same result", () => {
    const ps = [promo({ priority: 3 }), promo({ priority: 3 }), promo({ priority: 1, type: PromotionType.FIXED_AMOUNT, percentOffBps: undefined, amountOff: 77n, currency: "EUR" })];
    const lines = [line("x", 333n, 3), line("y", 1001n), line("z", 7n, 9)];
    const a = run(cart(lines), ps);
    const b = run(cart([...lines].reverse()), [...ps].reverse());
    const view = (r: typeof a) => r.applied.map((x) => [x.promotion.id, x.amount, [...x.allocations].sort((p, q) => (p.lineId < q.lineId ? -1 : 1))]);
    expect(view(b)).toEqual(view(a));
  });
});

describe("allocation", () => {
  it("shares add up exactly and respect caps", () => {
    expect(allocate(10n, [1n, 1n, 1n], [10n, 10n, 10n])).toEqual([4n, 3n, 3n]);
    expect(allocate(5n, [0n, 0n], [2n, 3n])).toEqual([2n, 3n]);
    expect(allocate(3n, [100n, 1n], [1n, 5n])).toEqual([1n, 2n]);
  });

  it("random carts: allocations sum to each discount, no line goes negative, items never above the subtotal", () => {
    let state = 42;
    const rnd = (n: number) => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % n;
    };
    for (let i = 0; i < 500; i++) {
      const lines = Array.from({ length: 1 + rnd(8) }, (_, k) => line(`l${k}`, BigInt(rnd(5000)), 1 + rnd(5), { productId: rnd(2) ? P1 : P2 }));
      const ps: EnginePromotion[] = Array.from({ length: 1 + rnd(4) }, () => {
        const kind = rnd(4);
        const base = { priority: rnd(3), stackable: rnd(4) > 0, rules: rnd(3) === 0 ? { productIds: [P1] } : {} };
        if (kind === 0) return promo({ ...base, percentOffBps: 1 + rnd(10_000), ...(rnd(2) ? { maxDiscount: BigInt(1 + rnd(3000)), currency: "EUR" } : {}) });
        if (kind === 1) return promo({ ...base, type: PromotionType.FIXED_AMOUNT, percentOffBps: undefined, amountOff: BigInt(1 + rnd(20_000)), currency: "EUR" });
        if (kind === 2) return promo({ ...base, type: PromotionType.FREE_SHIPPING, percentOffBps: undefined });
        return promo({ ...base, type: PromotionType.BUY_X_GET_Y, percentOffBps: undefined, buyXGetY: { buy: 1 + rnd(3), get: 1 + rnd(2), discountBps: 1 + rnd(10_000), maxApplications: rnd(3) } });
      });
      const c = cart(lines, rnd(2) ? { shipping: BigInt(rnd(1000)) } : {});
      checkInvariants(c, run(c, ps));
    }
  });
});
