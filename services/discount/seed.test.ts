/**
 * The demo promotions against a real server: they load once, and a cart of
 * seeded T-shirts (categories with their ancestors, as Cart builds snapshots)
 * gets 10% off Clothing, free shipping above 75 USD and, with code B2G1, the
 * cheapest of three T-shirts free.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateCatalog } from "../product/seed.ts";
import { seedDiscounts } from "./seed.ts";
import { auth, type DiscountHarness, eur, snapshot, startDiscountHarness } from "./testing.ts";

let h: DiscountHarness;

beforeAll(async () => {
  h = await startDiscountHarness();
});

afterAll(async () => {
  await h?.stop();
});

describe("discount seed", () => {
  it("loads the demo promotions once, and they work with the seeded catalog", async () => {
    const url = h.mesh.services.discount!.ctx.config.databaseUrl;
    expect(await seedDiscounts(url)).toBe(4);
    expect(await seedDiscounts(url)).toBe(0);

    const categories = generateCatalog(0).categories!;
    const clothing = categories.find((c) => c.name === "Clothing")!.id as string;
    const tshirts = categories.find((c) => c.name === "T-Shirts")!.id as string;
    const tee = { categoryIds: [tshirts, clothing] };
    const cart = snapshot(
      [
        [3000n, 2, tee],
        [2500n, 1, tee],
      ],
      { currencyCode: "USD", shippingAmount: eur(795n, "USD"), couponCodes: ["b2g1"] },
    );
    const r = await h.discounts.calculateDiscounts({ cart }, auth(h.cart));
    expect(r.discounts.map((d) => [d.promotionName, d.amount!.amountMinor])).toEqual([
      // B2G1 (priority 30): the 25.00 T-shirt is free; then 10% of the 60.00 left; then free shipping.
      ["Buy 2 T-shirts, get 1 free", 2500n],
      ["10% off Clothing", 600n],
      ["Free shipping over 75 USD", 795n],
    ]);
    expect(r.rejectedCoupons).toEqual([]);
    const welcome = await h.discounts.validateCoupon({ code: "welcome10" }, auth(h.customer));
    expect(welcome).toMatchObject({ valid: true, offer: { code: "WELCOME10", amountOff: eur(1000n, "USD") } });
  });
});
