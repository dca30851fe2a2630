/** The Discount service's settings: working defaults, every bad value reported at once. */
import { describe, expect, it } from "vitest";
import { loadDiscountConfig } from "./config.ts";

describe("discount settings", () => {
  it("has defaults that work locally", () => {
    const config = loadDiscountConfig({});
    expect([...config.shopCurrencies]).toEqual(["EUR", "USD", "GBP"]);
    expect(config.maxAutomatic).toBe(200);
  });

  it("reports every bad value at once", () => {
    expect(() => loadDiscountConfig({ SHOP_CURRENCIES: "euro", DISCOUNT_MAX_AUTOMATIC: "0" })).toThrow(/SHOP_CURRENCIES[\s\S]*DISCOUNT_MAX_AUTOMATIC|DISCOUNT_MAX_AUTOMATIC[\s\S]*SHOP_CURRENCIES/);
  });
});
