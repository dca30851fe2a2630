/**
 * `npm run seed`'s demo promotions on `npm run seed`'s catalog, through the
 * Cart as a shopper sees them: real Product, Cart and Discount servers, both
 * seeds loaded into their databases. Seeded products sit in leaf categories
 * (T-Shirts, Knitwear) and the promotions name the department (Clothing) or
 * the leaf, so this also shows the Cart sending each line's ancestors as the
 * catalog's tree has them (services/discount/seed.test.ts builds its snapshots
 * by hand instead).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateCatalog, seedCatalog } from "../product/seed.ts";
import { discountService } from "../discount/service.ts";
import { seedDiscounts } from "../discount/seed.ts";
import { auth, type CartHarness, startCartHarness } from "./testing.ts";

/** Products of the seed: enough for every leaf category to hold a few. */
const seeded = 150;
let h: CartHarness;

beforeAll(async () => {
  h = await startCartHarness({}, [discountService]);
  await seedCatalog(h.mesh.services.product!.ctx.config.databaseUrl, { products: seeded });
  await seedDiscounts(h.mesh.services.discount!.ctx.config.databaseUrl);
}, 120_000);
afterAll(() => h?.stop());

const usd = (amountMinor: bigint) => ({ amountMinor, currencyCode: "USD" });
const roundHalfUp = (num: bigint, den: bigint) => (2n * num + den) / (2n * den);

/** A seeded variant of a product in the named leaf category that can be bought `units` times. */
function seededVariant(leaf: string, units: number) {
  const rows = generateCatalog(seeded);
  const category = rows.categories!.find((c) => c.name === leaf)!.id;
  const inLeaf = new Set(rows.product_categories!.filter((pc) => pc.category_id === category).map((pc) => pc.product_id));
  const sellable = new Set(rows.products!.filter((p) => inLeaf.has(p.id) && p.status === "active" && p.is_visible).map((p) => p.id));
  const v = rows.product_variants!.find((x) => sellable.has(x.product_id) && (x.stock_quantity as number) >= units)!;
  return { productId: v.product_id as string, variantId: v.id as string, price: BigInt(v.price_minor as string) };
}

describe("the demo promotions on the demo catalog", () => {
  it("10% off Clothing applies to a T-shirt, free shipping above 75 USD, and code B2G1 makes the cheapest of three T-shirts free", async () => {
    const tee = seededVariant("T-Shirts", 3);
    const knit = seededVariant("Knitwear", 1);
    const user = await h.customer();

    // One T-shirt: the automatic 10% off Clothing (the department) reaches it through its leaf category; below 75 USD, no free shipping.
    const one = (await h.carts.addItem({ productId: tee.productId, variantId: tee.variantId, quantity: 1 }, auth(user.token))).cart!;
    expect(one.warnings).toEqual([]);
    expect(one.discounts.map((d) => d.name)).toEqual(["10% off Clothing"]);
    expect(one).toMatchObject({ subtotal: usd(tee.price), discountTotal: usd(roundHalfUp(tee.price, 10n)), freeShipping: false });

    // Three T-shirts and a sweater, with B2G1: one T-shirt free (priority 30), then 10% of what is left, and free shipping.
    await h.carts.addItem({ productId: tee.productId, variantId: tee.variantId, quantity: 2 }, auth(user.token));
    await h.carts.addItem({ productId: knit.productId, variantId: knit.variantId, quantity: 1 }, auth(user.token));
    const cart = (await h.carts.applyCoupon({ code: "b2g1" }, auth(user.token))).cart!;
    const subtotal = 3n * tee.price + knit.price;
    expect(subtotal).toBeGreaterThanOrEqual(7500n);
    const tenPercent = roundHalfUp(2n * tee.price + knit.price, 10n);
    expect(cart.warnings).toEqual([]);
    expect(cart.discounts.map((d) => [d.name, d.couponCode, d.amount!.amountMinor, d.freeShipping])).toEqual([
      ["Buy 2 T-shirts, get 1 free", "B2G1", tee.price, false],
      ["10% off Clothing", "", tenPercent, false],
      ["Free shipping over 75 USD", "", 0n, true],
    ]);
    expect(cart).toMatchObject({ couponCode: "B2G1", subtotal: usd(subtotal), discountTotal: usd(tee.price + tenPercent), total: usd(subtotal - tee.price - tenPercent), freeShipping: true });
    expect(cart.items.reduce((s, i) => s + i.discountAmount!.amountMinor, 0n)).toBe(tee.price + tenPercent);
  });
});
