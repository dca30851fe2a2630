/**
 * Per-client rate limits of the storefront, declared by the services and counted by
 * the kit in their databases: cart writes at Cart, code checks at Discount. A check
 * Cart makes on a shopper's behalf (ApplyCoupon → ValidateCoupon) counts against the
 * shopper, whose address Cart passes on, not against the Cart service.
 */
import { connect } from "node:net";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { discountService } from "../discount/service.ts";
import { auth, type CartHarness, failure, startCartHarness, unique } from "./testing.ts";

let h: CartHarness;

/** A client whose connections come from `local` (any 127.0.0.0/8 address is loopback), as a shopper's would. */
function from<S extends typeof CartService | typeof DiscountService>(service: S, name: "cart" | "discount", local: string) {
  const authority = new URL(h.mesh.url(name));
  const createConnection = () => connect({ host: authority.hostname, port: Number(authority.port), localAddress: local });
  return createClient(service, createGrpcTransport({ baseUrl: h.mesh.url(name), nodeOptions: { createConnection } }));
}

beforeAll(async () => {
  h = await startCartHarness({ CART_RATE_LIMIT_WRITES: "5", DISCOUNT_RATE_LIMIT_CODE_CHECKS: "3", TRUSTED_PROXY_HOPS: "1" }, [discountService]);
});
afterAll(() => h?.stop());

describe("rate limits", () => {
  it("limits cart writes per client address, with a RetryInfo, and leaves other clients alone", async () => {
    const p = await h.product(1000n, 100);
    const shopper = from(CartService, "cart", "127.0.0.2");
    let token = "";
    for (let i = 0; i < 5; i++) token = (await shopper.addItem({ guestToken: token, productId: p.id, quantity: 1 })).cart!.guestToken;
    const refused = await failure(shopper.addItem({ guestToken: token, productId: p.id, quantity: 1 }));
    expect(refused).toMatchObject({ code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
    expect(refused.error.findDetails(RetryInfoSchema)[0]?.retryDelay).toBeDefined();
    // Reads are not writes; another client's writes have their own counter.
    expect((await shopper.getCart({ guestToken: token })).cart!.itemCount).toBe(5);
    expect((await from(CartService, "cart", "127.0.0.3").addItem({ productId: p.id, quantity: 1 })).cart!.itemCount).toBe(1);
  });

  it("counts the code checks Cart makes for a shopper against that shopper, not against Cart", async () => {
    const discounts = createClient(DiscountService, createGrpcTransport({ baseUrl: h.mesh.url("discount") }));
    const { promotion } = await discounts.createPromotion(
      { name: "5% off", type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 500 }, currencyCode: "USD", isActive: true },
      auth(h.admin),
    );
    const code = unique("RL").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 32);
    await discounts.createCoupon({ promotionId: promotion!.id, code }, auth(h.admin));

    const guesser = from(CartService, "cart", "127.0.0.4");
    const token = (await guesser.applyCoupon({ code })).cart!.guestToken;
    await guesser.applyCoupon({ guestToken: token, code: `${code}X` }).catch(() => undefined);
    await guesser.applyCoupon({ guestToken: token, code: `${code}Y` }).catch(() => undefined);
    // The fourth code check of this shopper is refused by Discount, through Cart.
    expect(await failure(guesser.applyCoupon({ guestToken: token, code: `${code}Z` }))).toMatchObject({ code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
    // Someone else, asking Discount directly or through Cart, still checks codes.
    expect((await from(DiscountService, "discount", "127.0.0.5").validateCoupon({ code })).valid).toBe(true);
    expect((await from(CartService, "cart", "127.0.0.6").applyCoupon({ code })).cart!.couponCode).toBe(code.toUpperCase());
  });
});
