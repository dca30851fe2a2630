/**
 * The discount engine: a pure function of a cart snapshot, the candidate
 * promotions and coupons (as the database holds them) and the time. No I/O,
 * no clock, no randomness: CalculateDiscounts, ValidateCoupon and
 * RedeemDiscounts call it with what they loaded, so a quote and a redemption
 * agree. The steps are the contract's (discount.proto, DiscountService):
 * candidates, rules, order, stacking, amounts; money is bigint minor units in
 * the cart's one currency, allocations are exact (largest remainder).
 */
import { CouponRejectionReason as R, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";

export { R as Reason };

export interface EngineLine {
  lineId: string;
  productId: string;
  categoryIds: readonly string[];
  quantity: number;
  unitPrice: bigint;
}

export interface EngineCart {
  currency: string;
  lines: readonly EngineLine[];
  /** Undefined while shipping is unknown. */
  shipping?: bigint;
  /** Codes as sent (trimmed and upper-cased here). */
  couponCodes: readonly string[];
  /** Undefined when unknown: first-order rules are then taken as met. */
  isFirstOrder?: boolean;
}

export interface EngineRules {
  minSubtotal?: bigint;
  productIds?: readonly string[];
  categoryIds?: readonly string[];
  minQuantity?: number;
  firstOrder?: boolean;
  customerIds?: readonly string[];
}

export interface EnginePromotion {
  id: string;
  name: string;
  type: PromotionType;
  percentOffBps?: number;
  amountOff?: bigint;
  buyXGetY?: { buy: number; get: number; discountBps: number; maxApplications: number };
  maxDiscount?: bigint;
  /** Empty: applies in every currency. */
  currency: string;
  isAutomatic: boolean;
  priority: number;
  stackable: boolean;
  budget?: bigint;
  budgetUsed: bigint;
  startsAt?: Date;
  endsAt?: Date;
  isActive: boolean;
  rules: EngineRules;
}

export interface EngineCoupon {
  id: string;
  /** Upper case. */
  code: string;
  promotion: EnginePromotion;
  usageLimit: number;
  usageLimitPerUser: number;
  timesUsed: number;
  /** Unreleased uses by the customer being priced (0 for a guest). */
  userUses: number;
  startsAt?: Date;
  endsAt?: Date;
  isActive: boolean;
}

export interface Allocation {
  lineId: string;
  amount: bigint;
}

export interface Applied {
  promotion: EnginePromotion;
  coupon?: EngineCoupon;
  amount: bigint;
  freeShipping: boolean;
  allocations: Allocation[];
}

export interface Rejection {
  reason: R;
  message: string;
  /** MIN_SUBTOTAL_NOT_MET: the subtotal needed. */
  minSubtotal?: bigint;
}

export interface RejectedCode extends Rejection {
  /** The code as sent. */
  code: string;
}

export interface Skipped extends Rejection {
  promotion: EnginePromotion;
}

export interface EngineResult {
  currency: string;
  subtotal: bigint;
  applied: Applied[];
  itemsDiscount: bigint;
  shippingDiscount: bigint;
  total: bigint;
  freeShipping: boolean;
  rejected: RejectedCode[];
  skipped: Skipped[];
}

export interface EngineInput {
  cart: EngineCart;
  /** Empty for a guest. */
  userId: string;
  /** Automatic promotions to consider (the engine re-checks that each is live). */
  automatic: readonly EnginePromotion[];
  /** The coupons found for the cart's codes, by upper-case code. */
  coupons: ReadonlyMap<string, EngineCoupon>;
  now: Date;
}

/** How the contract matches codes: surrounding whitespace trimmed, any letter case. */
export const normalizeCode = (code: string): string => code.trim().toUpperCase();

export const lineAmount = (l: EngineLine): bigint => l.unitPrice * BigInt(l.quantity);

const reject = (reason: R, message: string, minSubtotal?: bigint): Rejection => ({ reason, message, ...(minSubtotal === undefined ? {} : { minSubtotal }) });

/** Formats minor units for messages (2 decimals; messages are a fallback, clients show their own text). */
export function formatMinor(amount: bigint, currency: string): string {
  const sign = amount < 0n ? "-" : "";
  const abs = amount < 0n ? -amount : amount;
  return `${sign}${abs / 100n}.${String(abs % 100n).padStart(2, "0")} ${currency}`;
}

/** The remaining budget; undefined for no budget. */
export const budgetLeft = (p: EnginePromotion): bigint | undefined => (p.budget === undefined ? undefined : p.budget - p.budgetUsed);

/** Active, within its window, budget not used up: the checks a promotion passes before its rules. */
export function promotionLiveness(p: EnginePromotion, now: Date): Rejection | undefined {
  if (!p.isActive) return reject(R.INACTIVE, "the promotion is not active");
  if (p.startsAt && p.startsAt > now) return reject(R.NOT_STARTED, `the promotion starts at ${p.startsAt.toISOString()}`);
  if (p.endsAt && p.endsAt <= now) return reject(R.EXPIRED, "the promotion has ended");
  const left = budgetLeft(p);
  if (left !== undefined && left <= 0n) return reject(R.BUDGET_EXHAUSTED, "the promotion's budget is used up");
  return undefined;
}

/**
 * The checks of a code itself, without a cart: exists, active, window, usage
 * limits, and for a known customer the per-customer limit and customer list
 * (a guest gets SIGN_IN_REQUIRED for a customer-list promotion).
 */
export function couponCodeCheck(coupon: EngineCoupon | undefined, userId: string, now: Date): Rejection | undefined {
  if (!coupon) return reject(R.NOT_FOUND, "no coupon has this code");
  const p = coupon.promotion;
  if (!coupon.isActive || !p.isActive) return reject(R.INACTIVE, "this code is not active");
  if ((coupon.startsAt && coupon.startsAt > now) || (p.startsAt && p.startsAt > now)) return reject(R.NOT_STARTED, "this code is not valid yet");
  if ((coupon.endsAt && coupon.endsAt <= now) || (p.endsAt && p.endsAt <= now)) return reject(R.EXPIRED, "this code has expired");
  if (coupon.usageLimit > 0 && coupon.timesUsed >= coupon.usageLimit) return reject(R.USAGE_LIMIT_REACHED, "this code has been used as often as it may be");
  if (userId && coupon.usageLimitPerUser > 0 && coupon.userUses >= coupon.usageLimitPerUser) {
    return reject(R.USER_LIMIT_REACHED, "you have used this code as often as you may");
  }
  const left = budgetLeft(p);
  if (left !== undefined && left <= 0n) return reject(R.BUDGET_EXHAUSTED, "the offer behind this code is used up");
  const customers = p.rules.customerIds;
  if (customers) {
    if (!userId) return reject(R.SIGN_IN_REQUIRED, "sign in to use this code");
    if (!customers.includes(userId)) return reject(R.CUSTOMER_NOT_ELIGIBLE, "this code is not for your account");
  }
  return undefined;
}

/** Lines a promotion's product and category rules make eligible (either one when both exist; all without). */
export function eligibleLines(rules: EngineRules, lines: readonly EngineLine[]): EngineLine[] {
  const { productIds, categoryIds } = rules;
  if (!productIds && !categoryIds) return [...lines];
  const products = new Set(productIds ?? []);
  const categories = new Set(categoryIds ?? []);
  return lines.filter((l) => products.has(l.productId) || l.categoryIds.some((c) => categories.has(c)));
}

/** Every rule of a promotion against the cart; the first that fails, in the contract's reason order. */
export function ruleCheck(p: EnginePromotion, cart: EngineCart, subtotal: bigint, userId: string): Rejection | undefined {
  const rules = p.rules;
  if (rules.customerIds) {
    if (!userId) return reject(R.SIGN_IN_REQUIRED, "sign in: this promotion is for selected customers");
    if (!rules.customerIds.includes(userId)) return reject(R.CUSTOMER_NOT_ELIGIBLE, "this promotion is for other customers");
  }
  if (rules.firstOrder && cart.isFirstOrder === false) return reject(R.FIRST_ORDER_ONLY, "this promotion is for first orders only");
  if (rules.minSubtotal !== undefined && subtotal < rules.minSubtotal) {
    return reject(R.MIN_SUBTOTAL_NOT_MET, `spend ${formatMinor(rules.minSubtotal, cart.currency)} to get this discount`, rules.minSubtotal);
  }
  const eligible = eligibleLines(rules, cart.lines);
  if (eligible.length === 0) return reject(R.NOT_APPLICABLE_TO_ITEMS, "no item in the cart is eligible");
  const units = eligible.reduce((s, l) => s + l.quantity, 0);
  if (rules.minQuantity !== undefined && units < rules.minQuantity) {
    return reject(R.MIN_QUANTITY_NOT_MET, `add ${rules.minQuantity - units} more eligible item(s) to get this discount`);
  }
  // Buy X get Y needs one full group; with fewer units it does not apply (rather than applying as zero).
  const group = p.buyXGetY ? p.buyXGetY.buy + p.buyXGetY.get : 0;
  if (units < group) return reject(R.MIN_QUANTITY_NOT_MET, `add ${group - units} more eligible item(s) to get this discount`);
  return undefined;
}

/** Contract order: priority (higher first), then starts_at (older first, unset oldest), then id. */
export function compareCandidates(a: EnginePromotion, b: EnginePromotion): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  const sa = a.startsAt?.getTime() ?? -Infinity;
  const sb = b.startsAt?.getTime() ?? -Infinity;
  if (sa !== sb) return sa < sb ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Rounds num/den half up (num, den >= 0). */
export function roundHalfUp(num: bigint, den: bigint): bigint {
  return (2n * num + den) / (2n * den);
}

const min = (a: bigint, b: bigint) => (a < b ? a : b);

/**
 * Splits `amount` over `weights` in proportion (largest remainder, ties to the
 * earlier entry), never giving an entry more than its cap. Requires
 * 0 <= amount <= sum(caps); the shares add up to `amount` exactly.
 */
export function allocate(amount: bigint, weights: readonly bigint[], caps: readonly bigint[]): bigint[] {
  const n = weights.length;
  const shares = new Array<bigint>(n).fill(0n);
  const total = weights.reduce((s, w) => s + w, 0n);
  if (amount === 0n || n === 0) return shares;
  if (total > 0n) {
    const rems: { i: number; r: bigint }[] = [];
    let given = 0n;
    for (let i = 0; i < n; i++) {
      const product = amount * weights[i]!;
      shares[i] = product / total;
      given += shares[i]!;
      rems.push({ i, r: product % total });
    }
    rems.sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
    for (let k = 0; given < amount && k < rems.length; k++, given++) shares[rems[k]!.i]! += 1n;
  }
  // Caps: move any excess, in order, to entries with room (rare: only where rounding put a share above its cap).
  let excess = 0n;
  for (let i = 0; i < n; i++) {
    if (shares[i]! > caps[i]!) {
      excess += shares[i]! - caps[i]!;
      shares[i] = caps[i]!;
    }
  }
  if (total === 0n) excess = amount;
  for (let i = 0; excess > 0n && i < n; i++) {
    const room = caps[i]! - shares[i]!;
    const add = min(room, excess);
    shares[i]! += add;
    excess -= add;
  }
  if (excess > 0n) throw new Error("allocate: amount above the sum of the caps");
  return shares;
}

/** Buy X get Y: the discounted units of each line (cheapest units of each full group) and the exact value. */
function buyXGetY(p: EnginePromotion, eligible: readonly EngineLine[], left: ReadonlyMap<string, bigint>) {
  const { buy, get, discountBps, maxApplications } = p.buyXGetY!;
  // Units by unit price, highest first; ties by line id, so the result does not depend on line order.
  const sorted = [...eligible].sort((a, b) =>
    a.unitPrice === b.unitPrice ? (a.lineId < b.lineId ? -1 : a.lineId > b.lineId ? 1 : 0) : a.unitPrice > b.unitPrice ? -1 : 1,
  );
  const size = buy + get;
  const totalUnits = sorted.reduce((s, l) => s + l.quantity, 0);
  let groups = Math.floor(totalUnits / size);
  if (maxApplications > 0) groups = Math.min(groups, maxApplications);
  const end = groups * size;
  // Discounted positions among the first n units of that order: the last `get` of each group of `size`.
  const before = (n: number) => {
    const m = Math.min(n, end);
    return Math.floor(m / size) * get + Math.max(0, (m % size) - buy);
  };
  const discounted = new Map<string, number>();
  let start = 0;
  for (const l of sorted) {
    const d = before(start + l.quantity) - before(start);
    if (d > 0) discounted.set(l.lineId, d);
    start += l.quantity;
  }
  // A discounted unit is worth what earlier promotions left of its line, per unit: left * d / quantity.
  const lines = eligible.filter((l) => discounted.has(l.lineId));
  const denominator = lines.reduce((acc, l) => lcm(acc, BigInt(l.quantity)), 1n);
  const weights = lines.map((l) => left.get(l.lineId)! * BigInt(discounted.get(l.lineId)!) * (denominator / BigInt(l.quantity)));
  const weightSum = weights.reduce((s, w) => s + w, 0n);
  const raw = roundHalfUp(weightSum * BigInt(discountBps), denominator * 10_000n);
  return { lines, weights, raw };
}

function gcd(a: bigint, b: bigint): bigint {
  while (b) [a, b] = [b, a % b];
  return a;
}
const lcm = (a: bigint, b: bigint) => (a / gcd(a, b)) * b;

/** Calculates the discounts of a cart: the one engine behind every quote and redemption. */
export function calculateDiscounts(input: EngineInput): EngineResult {
  const { cart, userId, now } = input;
  const subtotal = cart.lines.reduce((s, l) => s + lineAmount(l), 0n);
  const rejected: RejectedCode[] = [];
  const skipped: Skipped[] = [];

  // 1. Candidates.
  const candidates: { promotion: EnginePromotion; coupon?: EngineCoupon; code?: string; spent?: Rejection }[] = [];
  for (const p of input.automatic) {
    if (!p.isAutomatic || (p.currency !== "" && p.currency !== cart.currency)) continue;
    const dead = promotionLiveness(p, now);
    // A used-up budget is explained (skipped_promotions: "budget used up"), in evaluation order; other dead promotions are no candidates.
    if (dead && dead.reason !== R.BUDGET_EXHAUSTED) continue;
    candidates.push({ promotion: p, ...(dead ? { spent: dead } : {}) });
  }
  const seenPromotions = new Set(candidates.map((c) => c.promotion.id));
  for (const code of cart.couponCodes) {
    const coupon = input.coupons.get(normalizeCode(code));
    const refusal = couponCodeCheck(coupon, userId, now);
    if (refusal) {
      rejected.push({ code, ...refusal });
      continue;
    }
    const p = coupon!.promotion;
    if (p.currency !== "" && p.currency !== cart.currency) {
      rejected.push({ code, ...reject(R.CURRENCY_MISMATCH, `this code is for carts in ${p.currency}`) });
      continue;
    }
    if (seenPromotions.has(p.id)) {
      rejected.push({ code, ...reject(R.NOT_COMBINABLE, "another code of the same offer is already used") });
      continue;
    }
    seenPromotions.add(p.id);
    candidates.push({ promotion: p, coupon: coupon!, code });
  }

  // 3. Order.
  candidates.sort((a, b) => compareCandidates(a.promotion, b.promotion));

  const left = new Map(cart.lines.map((l) => [l.lineId, lineAmount(l)]));
  let shippingLeft = cart.shipping ?? 0n;
  const applied: Applied[] = [];
  let exclusive = false;
  for (const c of candidates) {
    const p = c.promotion;
    const refuse = (r: Rejection) => (c.code !== undefined ? rejected.push({ code: c.code, ...r }) : skipped.push({ promotion: p, ...r }));
    if (c.spent) {
      refuse(c.spent);
      continue;
    }
    // 2. Rules.
    const broken = ruleCheck(p, cart, subtotal, userId);
    if (broken) {
      refuse(broken);
      continue;
    }
    // 4. Stacking.
    if (exclusive || (!p.stackable && applied.length > 0)) {
      refuse(reject(R.NOT_COMBINABLE, "this offer does not combine with a discount that applies first"));
      continue;
    }
    // 5. Amounts.
    const cap = budgetLeft(p);
    const eligible = eligibleLines(p.rules, cart.lines);
    let amount: bigint;
    let allocations: Allocation[] = [];
    const free = p.type === PromotionType.FREE_SHIPPING;
    if (free) {
      amount = cap === undefined ? shippingLeft : min(shippingLeft, cap);
      shippingLeft -= amount;
    } else {
      let lines: EngineLine[];
      let weights: bigint[];
      let raw: bigint;
      const base = eligible.reduce((s, l) => s + left.get(l.lineId)!, 0n);
      if (p.type === PromotionType.PERCENTAGE) {
        lines = eligible;
        weights = eligible.map((l) => left.get(l.lineId)!);
        raw = roundHalfUp(base * BigInt(p.percentOffBps ?? 0), 10_000n);
      } else if (p.type === PromotionType.FIXED_AMOUNT) {
        lines = eligible;
        weights = eligible.map((l) => left.get(l.lineId)!);
        raw = p.amountOff ?? 0n;
      } else {
        ({ lines, weights, raw } = buyXGetY(p, eligible, left));
      }
      const room = lines.reduce((s, l) => s + left.get(l.lineId)!, 0n);
      amount = min(raw, room);
      if (p.maxDiscount !== undefined && p.type !== PromotionType.FIXED_AMOUNT) amount = min(amount, p.maxDiscount);
      if (cap !== undefined) amount = min(amount, cap);
      const shares = allocate(
        amount,
        weights,
        lines.map((l) => left.get(l.lineId)!),
      );
      allocations = lines.map((l, i) => ({ lineId: l.lineId, amount: shares[i]! }));
      for (const a of allocations) left.set(a.lineId, left.get(a.lineId)! - a.amount);
    }
    applied.push({ promotion: p, ...(c.coupon ? { coupon: c.coupon } : {}), amount, freeShipping: free, allocations });
    if (!p.stackable) exclusive = true;
  }

  const itemsDiscount = applied.filter((a) => !a.freeShipping).reduce((s, a) => s + a.amount, 0n);
  const shippingDiscount = applied.filter((a) => a.freeShipping).reduce((s, a) => s + a.amount, 0n);
  return {
    currency: cart.currency,
    subtotal,
    applied,
    itemsDiscount,
    shippingDiscount,
    total: itemsDiscount + shippingDiscount,
    freeShipping: applied.some((a) => a.freeShipping),
    rejected,
    skipped,
  };
}
