/**
 * The Shipping service through its contract, against a real server and
 * PostgreSQL: admin policies and input, carriers, methods and rates CRUD,
 * rate selection by country, weight band, minimum subtotal and free_above,
 * and QuoteShippingRate for Order. Rates are global, so each test quotes in
 * its own currency and sees only its own rates.
 */
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { money } from "../../kit/money.ts";
import { addBusinessDays } from "./rates.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { auth, carrierWithMethod, failure, type ShippingHarness, startShippingHarness } from "./testing.ts";

let h: ShippingHarness;

beforeAll(async () => {
  h = await startShippingHarness();
});

afterAll(async () => {
  await h?.stop();
});

let carriers = 0;
const nextCode = () => `c${++carriers}${Date.now().toString(36)}`;

const address = (countryCode: string) => ({ firstName: "Ada", lastName: "Lovelace", addressLine1: "1 Main St", city: "Berlin", postalCode: "10115", countryCode });
const parcel = (grams: number, quantity = 1) => [{ productId: uuidv7(), quantity, weightGrams: grams }];

const rates = (country: string, grams: number, subtotal: bigint, currency: string) =>
  h.shipping.getShippingRates({ destination: { countryCode: country }, items: parcel(grams), subtotal: money(subtotal, currency), currencyCode: currency });

describe("policies and input", () => {
  it("refuses customers, guests and other services on admin RPCs, and every caller but Order on QuoteShippingRate", async () => {
    expect((await failure(h.shipping.createCarrier({ code: "nope", name: "Nope" }, auth(h.customer)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.shipping.createCarrier({ code: "nope", name: "Nope" }))).code).toBe(Code.Unauthenticated);
    expect((await failure(h.shipping.listShippingRates({}, auth(h.cart)))).code).toBe(Code.PermissionDenied);
    const quote = { methodId: uuidv7(), shipTo: address("DE"), items: parcel(100), subtotal: money(100n, "EUR") };
    expect((await failure(h.shipping.quoteShippingRate(quote, auth(h.admin)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.shipping.quoteShippingRate(quote, auth(h.cart)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.shipping.quoteShippingRate(quote, auth(h.order)))).code).toBe(Code.NotFound);
  });

  it("refuses malformed input with the field named", async () => {
    const bad = await failure(h.shipping.createCarrier({ code: "Bad Code", name: "x" }, auth(h.admin)));
    expect([bad.code, bad.field]).toEqual([Code.InvalidArgument, "code"]);
    const { method } = await carrierWithMethod(h, nextCode());
    const band = await failure(h.shipping.createShippingRate({ methodId: method.id, minWeightGrams: 1000, maxWeightGrams: 500, price: money(100n, "EUR") }, auth(h.admin)));
    expect(band.code).toBe(Code.InvalidArgument);
    const mixed = await failure(h.shipping.createShippingRate({ methodId: method.id, price: money(100n, "EUR"), freeAbove: money(5000n, "USD") }, auth(h.admin)));
    expect(mixed.code).toBe(Code.InvalidArgument);
    const negative = await failure(rates("DE", 100, -1n, "EUR"));
    expect(negative.code).toBe(Code.InvalidArgument);
    const days = await failure(h.shipping.createShippingMethod({ carrierId: method.carrierId, code: "slow", name: "Slow", minDays: 5, maxDays: 2 }, auth(h.admin)));
    expect(days.code).toBe(Code.InvalidArgument);
    const unknown = await failure(h.shipping.createShippingRate({ methodId: uuidv7(), price: money(100n, "EUR") }, auth(h.admin)));
    expect(unknown.code).toBe(Code.NotFound);
  });
});

describe("carriers, methods and rates", () => {
  it("creates, updates and lists carriers; a code is taken once; inactive ones are listed to admins only", async () => {
    const code = nextCode();
    const { carrier, method } = await carrierWithMethod(h, code);
    const taken = await failure(h.shipping.createCarrier({ code, name: "Again" }, auth(h.admin)));
    expect([taken.code, taken.reason]).toEqual([Code.AlreadyExists, "CARRIER_CODE_TAKEN"]);
    const methodTaken = await failure(h.shipping.createShippingMethod({ carrierId: carrier.id, code: "standard", name: "Again", minDays: 1, maxDays: 2 }, auth(h.admin)));
    expect([methodTaken.code, methodTaken.reason]).toEqual([Code.AlreadyExists, "SHIPPING_METHOD_CODE_TAKEN"]);

    const { carrier: renamed } = await h.shipping.updateCarrier(
      { carrier: { id: carrier.id, name: "Renamed", isActive: false }, updateMask: { paths: ["name", "is_active"] } },
      auth(h.admin),
    );
    expect([renamed!.name, renamed!.isActive, renamed!.code]).toEqual(["Renamed", false, code]);

    const all = async (token?: string) => {
      const ids: string[] = [];
      let pageToken = "";
      do {
        const page = await h.shipping.listCarriers({ pageSize: 2, pageToken, includeInactive: true }, token ? auth(token) : {});
        ids.push(...page.carriers.map((c) => c.id));
        pageToken = page.nextPageToken;
      } while (pageToken);
      return ids;
    };
    expect(await all(h.admin)).toContain(carrier.id);
    expect(await all()).not.toContain(carrier.id);
    const methods = await h.shipping.listShippingMethods({ carrierId: carrier.id, includeInactive: true });
    expect(methods.shippingMethods).toEqual([]);
    const adminMethods = await h.shipping.listShippingMethods({ carrierId: carrier.id, includeInactive: true }, auth(h.admin));
    expect(adminMethods.shippingMethods.map((m) => m.id)).toEqual([method.id]);

    const notFound = await failure(h.shipping.updateCarrier({ carrier: { id: uuidv7(), name: "x" }, updateMask: { paths: ["name"] } }, auth(h.admin)));
    expect(notFound.code).toBe(Code.NotFound);
  });

  it("updates a method and refuses min_days above max_days", async () => {
    const { method } = await carrierWithMethod(h, nextCode(), [2, 4]);
    const bad = await failure(h.shipping.updateShippingMethod({ shippingMethod: { id: method.id, minDays: 5 }, updateMask: { paths: ["min_days"] } }, auth(h.admin)));
    expect([bad.code, bad.field]).toEqual([Code.InvalidArgument, "shipping_method.min_days"]);
    const { shippingMethod } = await h.shipping.updateShippingMethod(
      { shippingMethod: { id: method.id, minDays: 5, maxDays: 7 }, updateMask: { paths: ["min_days", "max_days"] } },
      auth(h.admin),
    );
    expect([shippingMethod!.minDays, shippingMethod!.maxDays]).toEqual([5, 7]);
  });

  it("updates, lists and deletes rates; an update that empties the band or mixes currencies is refused", async () => {
    const { method } = await carrierWithMethod(h, nextCode());
    const { shippingRate: rate } = await h.shipping.createShippingRate(
      { methodId: method.id, countries: ["DE"], minWeightGrams: 0, maxWeightGrams: 1000, price: money(490n, "EUR"), freeAbove: money(5000n, "EUR") },
      auth(h.admin),
    );
    const band = await failure(h.shipping.updateShippingRate({ shippingRate: { id: rate!.id, minWeightGrams: 1000 }, updateMask: { paths: ["min_weight_grams"] } }, auth(h.admin)));
    expect([band.code, band.reason]).toEqual([Code.InvalidArgument, "EMPTY_WEIGHT_BAND"]);
    const mixed = await failure(h.shipping.updateShippingRate({ shippingRate: { id: rate!.id, price: money(500n, "USD") }, updateMask: { paths: ["price"] } }, auth(h.admin)));
    expect([mixed.code, mixed.reason]).toEqual([Code.InvalidArgument, "CURRENCY_MISMATCH"]);
    const { shippingRate: updated } = await h.shipping.updateShippingRate(
      { shippingRate: { id: rate!.id, countries: ["DE", "AT"], price: money(590n, "EUR") }, updateMask: { paths: ["countries", "price", "free_above"] } },
      auth(h.admin),
    );
    expect(updated!.countries).toEqual(["DE", "AT"]);
    expect(updated!.price!.amountMinor).toBe(590n);
    expect(updated!.freeAbove).toBeUndefined();

    const listed = await h.shipping.listShippingRates({ methodId: method.id, countryCode: "AT" }, auth(h.admin));
    expect(listed.shippingRates.map((r) => r.id)).toEqual([rate!.id]);
    expect((await h.shipping.listShippingRates({ methodId: method.id, countryCode: "FR" }, auth(h.admin))).shippingRates).toEqual([]);

    await h.shipping.deleteShippingRate({ id: rate!.id }, auth(h.admin));
    expect((await failure(h.shipping.deleteShippingRate({ id: rate!.id }, auth(h.admin)))).code).toBe(Code.NotFound);
  });
});

describe("rate selection", () => {
  it("quotes by country, weight band and minimum subtotal, free above a threshold, cheapest first", async () => {
    const cur = "CHF";
    const { method: standard } = await carrierWithMethod(h, nextCode(), [3, 5]);
    const { method: express } = await carrierWithMethod(h, nextCode(), [1, 1], "express");
    const rate = (methodId: string, init: Record<string, unknown>) => h.shipping.createShippingRate({ methodId, ...init } as never, auth(h.admin));
    // Standard: every country 9.90; Germany 4.90 up to 1 kg, 6.90 from 1 kg; free above 50 in Germany.
    await rate(standard.id, { price: money(990n, cur) });
    const { shippingRate: deLight } = await rate(standard.id, { countries: ["DE"], maxWeightGrams: 1000, price: money(490n, cur), freeAbove: money(5000n, cur) });
    await rate(standard.id, { countries: ["DE"], minWeightGrams: 1000, price: money(690n, cur) });
    // Express: Germany only, from a subtotal of 20.
    await rate(express.id, { countries: ["DE"], minSubtotal: money(2000n, cur), price: money(1490n, cur) });

    const light = await rates("DE", 999, 1000n, cur);
    expect(light.quotes.map((q) => [q.methodId, q.price!.amountMinor, q.freeShipping])).toEqual([[standard.id, 490n, false]]);
    expect(light.quotes[0]!.rateId).toBe(deLight!.id);
    expect(light.quotes[0]!.freeAbove!.amountMinor).toBe(5000n);
    expect(light.totalWeightGrams).toBe(999);

    // 1000 g is the start of the next band (upper ends are exclusive); 20.00 reaches express's minimum.
    const heavy = await rates("DE", 1000, 2000n, cur);
    expect(heavy.quotes.map((q) => [q.methodId, q.price!.amountMinor])).toEqual([
      [standard.id, 690n],
      [express.id, 1490n],
    ]);

    const free = await rates("DE", 500, 5000n, cur);
    expect(free.quotes.map((q) => [q.methodId, q.price!.amountMinor, q.freeShipping])).toEqual([
      [standard.id, 0n, true],
      [express.id, 1490n, false],
    ]);

    // France: only the every-country rate of standard.
    const france = await rates("FR", 500, 5000n, cur);
    expect(france.quotes.map((q) => [q.methodId, q.price!.amountMinor])).toEqual([[standard.id, 990n]]);

    // Weight is weight x quantity.
    const many = await h.shipping.getShippingRates({ destination: { countryCode: "DE" }, items: parcel(250, 4), subtotal: money(0n, cur), currencyCode: cur });
    expect([many.totalWeightGrams, many.quotes[0]!.price!.amountMinor]).toEqual([1000, 690n]);

    // Another currency has no rates: nothing ships (not an error).
    expect((await rates("DE", 500, 5000n, "SEK")).quotes).toEqual([]);

    // The delivery window counts business days.
    const q = light.quotes[0]!;
    expect([q.minDays, q.maxDays]).toEqual([3, 5]);
    expect(Number(q.estimatedDeliveryEarliest!.seconds) * 1000).toBeGreaterThanOrEqual(addBusinessDays(new Date(), 3).getTime() - 86_400_000);
  });

  it("hides methods of inactive carriers and inactive methods", async () => {
    const cur = "NOK";
    const { carrier, method } = await carrierWithMethod(h, nextCode());
    await h.shipping.createShippingRate({ methodId: method.id, price: money(100n, cur) }, auth(h.admin));
    expect((await rates("DE", 1, 0n, cur)).quotes.map((q) => q.methodId)).toEqual([method.id]);
    await h.shipping.updateCarrier({ carrier: { id: carrier.id, isActive: false }, updateMask: { paths: ["is_active"] } }, auth(h.admin));
    expect((await rates("DE", 1, 0n, cur)).quotes).toEqual([]);
    await h.shipping.updateCarrier({ carrier: { id: carrier.id, isActive: true }, updateMask: { paths: ["is_active"] } }, auth(h.admin));
    await h.shipping.updateShippingMethod({ shippingMethod: { id: method.id, isActive: false }, updateMask: { paths: ["is_active"] } }, auth(h.admin));
    expect((await rates("DE", 1, 0n, cur)).quotes).toEqual([]);
  });

  it("QuoteShippingRate prices the chosen method for Order, or says it cannot ship", async () => {
    const cur = "DKK";
    const { method } = await carrierWithMethod(h, nextCode(), [1, 2]);
    await h.shipping.createShippingRate({ methodId: method.id, countries: ["DK"], maxWeightGrams: 5000, price: money(3900n, cur) }, auth(h.admin));
    const { quote, totalWeightGrams, quoteId, expiresAt } = await h.shipping.quoteShippingRate({ methodId: method.id, shipTo: address("DK"), items: parcel(1200, 2), subtotal: money(10000n, cur) }, auth(h.order));
    expect([quote!.methodId, quote!.price!.amountMinor, quote!.price!.currencyCode, totalWeightGrams]).toEqual([method.id, 3900n, cur, 2400]);
    // Binding: the stored quote keeps its price when the rates change.
    const { shippingRates } = await h.shipping.listShippingRates({ methodId: method.id }, auth(h.admin));
    await h.shipping.updateShippingRate({ shippingRate: { id: shippingRates[0]!.id, price: money(9900n, cur) }, updateMask: { paths: ["price"] } }, auth(h.admin));
    const stored = await h.shipping.getShippingQuote({ quoteId }, auth(h.order));
    expect([stored.quote!.price!.amountMinor, stored.totalWeightGrams, stored.quoteId]).toEqual([3900n, 2400, quoteId]);
    expect(Number(expiresAt!.seconds) - Date.now() / 1000).toBeGreaterThan(25 * 60);
    expect((await failure(h.shipping.getShippingQuote({ quoteId }, auth(h.cart)))).code).toBe(Code.PermissionDenied);
    expect((await failure(h.shipping.getShippingQuote({ quoteId: uuidv7() }, auth(h.order)))).reason).toBe("SHIPPING_QUOTE_NOT_FOUND");
    const tooHeavy = await failure(h.shipping.quoteShippingRate({ methodId: method.id, shipTo: address("DK"), items: parcel(5000), subtotal: money(0n, cur) }, auth(h.order)));
    expect([tooHeavy.code, tooHeavy.reason]).toEqual([Code.FailedPrecondition, "SHIPPING_UNAVAILABLE"]);
    const elsewhere = await failure(h.shipping.quoteShippingRate({ methodId: method.id, shipTo: address("SE"), items: parcel(100), subtotal: money(0n, cur) }, auth(h.order)));
    expect(elsewhere.reason).toBe("SHIPPING_UNAVAILABLE");
  });
});

describe("item weights from the catalog", () => {
  /** A method with two bands in `cur`: under 1 kg for 500, 1 kg and more for 2000. */
  async function banded(cur: string) {
    const { method } = await carrierWithMethod(h, nextCode());
    await h.shipping.createShippingRate({ methodId: method.id, maxWeightGrams: 1000, price: money(500n, cur) }, auth(h.admin));
    await h.shipping.createShippingRate({ methodId: method.id, minWeightGrams: 1000, price: money(2000n, cur) }, auth(h.admin));
    return method;
  }

  it("GetShippingRates weighs the lines with the catalog's weights, whatever the request declares", async () => {
    const cur = "PLN";
    await banded(cur);
    const heavy = await h.product(800);
    const { totalWeightGrams, quotes } = await h.shipping.getShippingRates({
      destination: { countryCode: "DE" },
      items: [{ productId: heavy.id, quantity: 2, weightGrams: 1 }],
      subtotal: money(0n, cur),
      currencyCode: cur,
    });
    expect([totalWeightGrams, quotes.map((q) => q.price!.amountMinor)]).toEqual([1600, [2000n]]);
  });

  it("a line the catalog has no weight for (weight 0, hidden, draft or unknown) keeps the request's weight", async () => {
    const cur = "CZK";
    await banded(cur);
    const known = await h.product(300);
    const unweighed = await h.product(0);
    const hidden = await h.product(5000, { isVisible: false });
    const draft = await h.product(5000, { status: ProductStatus.DRAFT });
    const { totalWeightGrams } = await h.shipping.getShippingRates({
      destination: { countryCode: "DE" },
      items: [
        { productId: known.id, quantity: 1, weightGrams: 0 },
        { productId: unweighed.id, quantity: 2, weightGrams: 40 },
        { productId: hidden.id, quantity: 1, weightGrams: 7 },
        { productId: draft.id, quantity: 1, weightGrams: 5 },
        { productId: uuidv7(), quantity: 1, weightGrams: 3 },
        // The same product on two lines (e.g. two variants): weighed on each.
        { productId: known.id, quantity: 1, weightGrams: 1 },
      ],
      subtotal: money(0n, cur),
      currencyCode: cur,
    });
    expect(totalWeightGrams).toBe(300 + 2 * 40 + 7 + 5 + 3 + 300);
  });

  it("QuoteShippingRate binds the price of the catalog's weight: an under-declared parcel is quoted, and refused, by what it weighs", async () => {
    const cur = "HUF";
    const { method } = await carrierWithMethod(h, nextCode());
    await h.shipping.createShippingRate({ methodId: method.id, maxWeightGrams: 1000, price: money(500n, cur) }, auth(h.admin));
    const light = await h.product(400);
    const heavy = await h.product(1500);
    const quote = (productId: string) =>
      h.shipping.quoteShippingRate({ methodId: method.id, shipTo: address("DE"), items: [{ productId, quantity: 2, weightGrams: 10 }], subtotal: money(0n, cur) }, auth(h.order));
    const { totalWeightGrams, quoteId } = await quote(light.id);
    expect(totalWeightGrams).toBe(800);
    expect((await h.shipping.getShippingQuote({ quoteId }, auth(h.order))).totalWeightGrams).toBe(800);
    const refused = await failure(quote(heavy.id));
    expect([refused.code, refused.reason, refused.metadata?.total_weight_grams]).toEqual([Code.FailedPrecondition, "SHIPPING_UNAVAILABLE", "3000"]);
  });

  it("a catalog that does not answer fails the quote as UNAVAILABLE, naming the product service (never the caller's weights)", async () => {
    const alone = await startShippingHarness({}, { product: false });
    try {
      const { method } = await carrierWithMethod(alone, nextCode());
      await alone.shipping.createShippingRate({ methodId: method.id, price: money(500n, "EUR") }, auth(alone.admin));
      const rates = await failure(alone.shipping.getShippingRates({ destination: { countryCode: "DE" }, items: parcel(100), subtotal: money(0n, "EUR"), currencyCode: "EUR" }));
      expect(rates.code).toBe(Code.Unavailable);
      expect(rates.message).toMatch(/product/);
      const quote = await failure(alone.shipping.quoteShippingRate({ methodId: method.id, shipTo: address("DE"), items: parcel(100), subtotal: money(0n, "EUR") }, auth(alone.order)));
      expect(quote.code).toBe(Code.Unavailable);
    } finally {
      await alone.stop();
    }
  });
});

describe("short limits", () => {
  let short: ShippingHarness;
  beforeAll(async () => {
    short = await startShippingHarness({ SHIPPING_QUOTE_TTL_SECONDS: "1", SHIPPING_RATE_LIMIT_TRACKING: "2" });
  });
  afterAll(async () => {
    await short?.stop();
  });

  it("TrackShipment is rate-limited per client: RESOURCE_EXHAUSTED past the limit", async () => {
    const track = () => failure(short.shipping.trackShipment({ trackingNumber: "SBX123456789012" }));
    expect((await track()).code).toBe(Code.NotFound);
    expect((await track()).code).toBe(Code.NotFound);
    const limited = await track();
    expect([limited.code, limited.reason]).toEqual([Code.ResourceExhausted, "RATE_LIMITED"]);
  });

  it("a stored quote holds until its expiry, then is refused as QUOTE_EXPIRED", async () => {
    {
      const { method } = await carrierWithMethod(short, nextCode());
      await short.shipping.createShippingRate({ methodId: method.id, price: money(500n, "EUR") }, auth(short.admin));
      const { quoteId, expiresAt } = await short.shipping.quoteShippingRate(
        { methodId: method.id, shipTo: address("DE"), items: parcel(100), subtotal: money(1000n, "EUR") },
        auth(short.order),
      );
      const expired = await eventually(async () => {
        const f = await failure(short.shipping.getShippingQuote({ quoteId }, auth(short.order))).catch(() => undefined);
        return f?.reason === "QUOTE_EXPIRED" ? f : undefined;
      });
      expect([expired.code, expired.metadata?.expires_at]).toEqual([Code.FailedPrecondition, new Date(Number(expiresAt!.seconds) * 1000 + expiresAt!.nanos / 1e6).toISOString()]);
    }
  });
});
