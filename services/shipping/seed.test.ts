/**
 * The demo shipping setup against a real server: it loads once, and the
 * seeded catalog's USD carts get standard and express quotes in the US, free
 * standard shipping from 75.00, and the international rate elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { money } from "../../kit/money.ts";
import { seedExpressMethodId, seedShipping, seedStandardMethodId } from "./seed.ts";
import { type ShippingHarness, startShippingHarness } from "./testing.ts";

let h: ShippingHarness;

beforeAll(async () => {
  h = await startShippingHarness();
});

afterAll(async () => {
  await h?.stop();
});

describe("shipping seed", () => {
  it("loads the demo carrier and rates once, and they quote the seeded catalog's carts", async () => {
    const url = h.mesh.services.shipping!.ctx.config.databaseUrl;
    expect(await seedShipping(url)).toBe(8);
    expect(await seedShipping(url)).toBe(0);
    const quote = async (countryCode: string, subtotal: bigint) =>
      (
        await h.shipping.getShippingRates({
          destination: { countryCode },
          items: [{ productId: seedStandardMethodId, quantity: 2, weightGrams: 400 }],
          subtotal: money(subtotal, "USD"),
          currencyCode: "USD",
        })
      ).quotes.map((q) => [q.methodId, q.price!.amountMinor]);
    expect(await quote("US", 5000n)).toEqual([
      [seedStandardMethodId, 595n],
      [seedExpressMethodId, 1995n],
    ]);
    expect((await quote("US", 7500n))[0]).toEqual([seedStandardMethodId, 0n]);
    expect(await quote("DE", 5000n)).toEqual([[seedStandardMethodId, 2495n]]);
  });
});
