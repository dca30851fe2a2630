/**
 * The Cart service through its public contract: real Product and Cart servers
 * (gRPC), real PostgreSQL and NATS. The Discount service is not started here,
 * so these tests also show the cart answering without discounts (warning
 * DISCOUNTS_UNAVAILABLE) and checkout refusing to; coupons are tested with the
 * real Discount service in test/e2e/cart.test.ts.
 */
import { createHash } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { connect as natsConnect } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CartStatus, CartWarningCode, type Cart } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { CartAbandonedSchema, CartConvertedSchema } from "../../gen/ecommerce/cart/v1/events_pb.js";
import type { IntervalJob } from "../../kit/jobs.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { DiscountRuleType, DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { discountService } from "../discount/service.ts";
import { auth, type CartHarness, failure, startCartHarness, unique } from "./testing.ts";

let h: CartHarness;
/** Guest and customer carts expire apart (configurable): an hour and a week here. */
const guestTtl = 3_600_000;
const customerTtl = 7 * 86_400_000;

beforeAll(async () => {
  // A small line limit to test it; abandonment after 1 ms, but the sweeper only runs when a test asks (runNow).
  h = await startCartHarness({ CART_MAX_LINES: "3", CART_ABANDON_AFTER_MS: "1", CART_SWEEP_INTERVAL_MS: "86400000", CART_GUEST_TTL_MS: String(guestTtl), CART_CUSTOMER_TTL_MS: String(customerTtl) });
});
afterAll(() => h?.stop());

const usd = (amountMinor: bigint) => ({ amountMinor, currencyCode: "USD" });
const codes = (cart: Cart | undefined) => cart!.warnings.map((w) => w.code);

/** Events of one type on CART_EVENTS, oldest first. */
async function cartEvents<S extends typeof CartConvertedSchema | typeof CartAbandonedSchema>(schema: S) {
  const nc = await natsConnect({ servers: h.mesh.nats.url });
  try {
    return await eventsOnStream(nc, "CART_EVENTS", schema);
  } finally {
    await nc.close();
  }
}

describe("guest carts", () => {
  it("adds two products, prices them on the server and keeps only the token's hash", async () => {
    const a = await h.product(1250n, 10);
    const b = await h.product(799n, 10);
    const first = await h.carts.addItem({ productId: a.id, quantity: 2 });
    const token = first.cart!.guestToken;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(first.cart).toMatchObject({ version: 1n, status: CartStatus.ACTIVE, currencyCode: "USD" });
    const second = await h.carts.addItem({ guestToken: token, productId: b.id, quantity: 1, expectedVersion: 1n });
    const cart = second.cart!;
    expect(cart.id).toBe(first.cart!.id);
    expect(cart.guestToken).toBe(token);
    expect(cart.version).toBe(2n);
    expect(cart.items.map((i) => [i.productId, i.quantity, i.lineTotal?.amountMinor])).toEqual([
      [a.id, 2, 2500n],
      [b.id, 1, 799n],
    ]);
    expect(cart.subtotal).toMatchObject(usd(3299n));
    expect(cart.total).toMatchObject(usd(3299n));
    expect(cart.itemCount).toBe(3);
    // No Discount service in this mesh: the cart still answers, without discounts, and says so.
    expect(codes(cart)).toEqual([CartWarningCode.DISCOUNTS_UNAVAILABLE]);

    const read = (await h.carts.getCart({ guestToken: token })).cart!;
    expect(read).toMatchObject({ id: cart.id, guestToken: token, version: 2n, total: usd(3299n) });
    const stored = await h.sql<{ guest_token_hash: string }>("select guest_token_hash from carts where id = $1", [cart.id]);
    expect(stored[0]!.guest_token_hash).toBe(createHash("sha256").update(token).digest("hex"));
    const anywhere = await h.sql<{ n: number }>("select count(*)::int as n from carts where row_to_json(carts)::text like $1", [`%${token}%`]);
    expect(anywhere[0]!.n).toBe(0);
  });

  it("a forged or unknown token sees no cart, changes none, and adding starts a new cart", async () => {
    const p = await h.product(500n, 10);
    const victim = (await h.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    const forged = "A".repeat(43);
    const empty = (await h.carts.getCart({ guestToken: forged })).cart!;
    expect(empty).toMatchObject({ id: "", guestToken: "", version: 0n, itemCount: 0 });
    const update = await failure(h.carts.updateItemQuantity({ guestToken: forged, line: { case: "itemId", value: victim.items[0]!.id }, quantity: 5 }));
    expect(update).toMatchObject({ code: Code.NotFound, reason: "ITEM_NOT_FOUND" });
    const fresh = (await h.carts.addItem({ guestToken: forged, productId: p.id, quantity: 1 })).cart!;
    expect(fresh.id).not.toBe(victim.id);
    expect(fresh.guestToken).not.toBe(forged);
    expect((await h.carts.getCart({ guestToken: victim.guestToken })).cart!.items[0]!.quantity).toBe(1);
    // A signed-in user never sees a guest cart through its token, nor gets the token back.
    const user = await h.customer();
    expect((await h.carts.getCart({ guestToken: victim.guestToken }, auth(user.token))).cart).toMatchObject({ id: "", guestToken: "" });
  });

  it("shows a catalog price change as price_changed with the new total", async () => {
    const p = await h.product(1000n, 10);
    const { cart } = await h.carts.addItem({ productId: p.id, quantity: 3 });
    await h.products.updateProduct({ product: { id: p.id, price: usd(1200n) }, updateMask: { paths: ["price"] } }, auth(h.admin));
    const repriced = (await h.carts.getCart({ guestToken: cart!.guestToken })).cart!;
    expect(repriced.items[0]).toMatchObject({ unitPrice: usd(1200n), priceAtAdd: usd(1000n), priceChanged: true, lineTotal: usd(3600n) });
    expect(repriced.total).toMatchObject(usd(3600n));
    expect(repriced.warnings.find((w) => w.code === CartWarningCode.PRICE_CHANGED)).toMatchObject({ itemId: repriced.items[0]!.id, productId: p.id });
    // The customer's next change of the line takes the new price.
    const updated = (await h.carts.updateItemQuantity({ guestToken: cart!.guestToken, line: { case: "product", value: { productId: p.id } }, quantity: 2 })).cart!;
    expect(updated.items[0]).toMatchObject({ priceAtAdd: usd(1200n), priceChanged: false, quantity: 2 });
    expect(codes(updated)).not.toContain(CartWarningCode.PRICE_CHANGED);
  });

  it("keeps an archived product as an unavailable line with a warning, out of the totals", async () => {
    const kept = await h.product(700n, 10);
    const archived = await h.product(300n, 10);
    const { cart } = await h.carts.addItem({ productId: kept.id, quantity: 1 });
    await h.carts.addItem({ guestToken: cart!.guestToken, productId: archived.id, quantity: 2 });
    await h.products.archiveProduct({ id: archived.id }, auth(h.admin));
    const read = (await h.carts.getCart({ guestToken: cart!.guestToken })).cart!;
    const line = read.items.find((i) => i.productId === archived.id)!;
    expect(line).toMatchObject({ available: false, maxQuantity: 0, lineTotal: usd(0n), quantity: 2, productName: archived.name });
    expect(read.warnings.find((w) => w.code === CartWarningCode.ITEM_UNAVAILABLE)).toMatchObject({ itemId: line.id, productId: archived.id });
    expect(read.subtotal).toMatchObject(usd(700n));
    expect(read.itemCount).toBe(3);
    // Lowering or removing the line always works.
    const lowered = (await h.carts.updateItemQuantity({ guestToken: cart!.guestToken, line: { case: "itemId", value: line.id }, quantity: 1 })).cart!;
    expect(lowered.items.find((i) => i.id === line.id)!.quantity).toBe(1);
    const raise = await failure(h.carts.updateItemQuantity({ guestToken: cart!.guestToken, line: { case: "itemId", value: line.id }, quantity: 2 }));
    expect(raise).toMatchObject({ code: Code.NotFound, reason: "PRODUCT_NOT_FOUND" });
    const removed = (await h.carts.removeItem({ guestToken: cart!.guestToken, line: { case: "itemId", value: line.id } })).cart!;
    expect(removed.items.map((i) => i.productId)).toEqual([kept.id]);
    expect(await failure(h.carts.removeItem({ guestToken: cart!.guestToken, line: { case: "itemId", value: line.id } }))).toMatchObject({ reason: "ITEM_NOT_FOUND" });
  });

  it("warns when stock drops below a line's quantity", async () => {
    const p = await h.product(100n, 5);
    const { cart } = await h.carts.addItem({ productId: p.id, quantity: 4 });
    await h.inventory.adjustStock({ idempotencyKey: unique("adj"), productId: p.id, change: { case: "delta", value: -3 }, reason: 1 }, auth(h.admin));
    const read = (await h.carts.getCart({ guestToken: cart!.guestToken })).cart!;
    expect(read.items[0]).toMatchObject({ available: true, maxQuantity: 2, quantity: 4, lineTotal: usd(400n) });
    expect(read.warnings.find((w) => w.code === CartWarningCode.INSUFFICIENT_STOCK)).toMatchObject({ itemId: read.items[0]!.id });
  });
});

describe("versions", () => {
  it("refuses a stale expected_version with ABORTED and changes nothing", async () => {
    const p = await h.product(100n, 50);
    const { cart } = await h.carts.addItem({ productId: p.id, quantity: 1 });
    const token = cart!.guestToken;
    await h.carts.addItem({ guestToken: token, productId: p.id, quantity: 1, expectedVersion: 1n });
    const stale = await failure(h.carts.addItem({ guestToken: token, productId: p.id, quantity: 1, expectedVersion: 1n }));
    expect(stale).toMatchObject({ code: Code.Aborted, reason: "CART_VERSION_MISMATCH", metadata: { current_version: "2" } });
    for (const call of [
      () => h.carts.updateItemQuantity({ guestToken: token, line: { case: "product", value: { productId: p.id } }, quantity: 5, expectedVersion: 1n }),
      () => h.carts.clearCart({ guestToken: token, expectedVersion: 1n }),
      () => h.carts.removeItem({ guestToken: token, line: { case: "product", value: { productId: p.id } }, expectedVersion: 1n }),
    ]) {
      expect(await failure(call())).toMatchObject({ code: Code.Aborted, reason: "CART_VERSION_MISMATCH" });
    }
    expect((await h.carts.getCart({ guestToken: token })).cart).toMatchObject({ version: 2n, itemCount: 2 });
  });

  it("lets exactly one of concurrent AddItem calls with the same expected_version win", async () => {
    const p = await h.product(100n, 50);
    const user = await h.customer();
    const base = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token))).cart!;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, () => h.carts.addItem({ productId: p.id, quantity: 1, expectedVersion: base.version }, auth(user.token))),
    );
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    for (const o of outcomes) if (o.status === "rejected") expect((await failure(Promise.reject(o.reason))).reason).toBe("CART_VERSION_MISMATCH");
    expect((await h.carts.getCart({}, auth(user.token))).cart).toMatchObject({ version: base.version + 1n, itemCount: 2 });
    // Without expected_version concurrent changes all apply: each is decided again on the state it finds.
    await Promise.all(Array.from({ length: 4 }, () => h.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token))));
    expect((await h.carts.getCart({}, auth(user.token))).cart).toMatchObject({ version: base.version + 5n, itemCount: 6 });
  });
});

describe("limits", () => {
  it("refuses what the catalog or the cart limits do not allow", async () => {
    const few = await h.product(100n, 3);
    const none = await h.product(100n, 0);
    const backorder = await h.product(100n, 0, { allowBackorder: true });
    const { cart } = await h.carts.addItem({ productId: few.id, quantity: 2 });
    const token = cart!.guestToken;
    expect(await failure(h.carts.addItem({ guestToken: token, productId: few.id, quantity: 2 }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "INSUFFICIENT_STOCK",
      metadata: { available: "3" },
    });
    expect(await failure(h.carts.addItem({ guestToken: token, productId: none.id, quantity: 1 }))).toMatchObject({ code: Code.FailedPrecondition, reason: "OUT_OF_STOCK" });
    await h.carts.addItem({ guestToken: token, productId: backorder.id, quantity: 99 });
    expect(await failure(h.carts.addItem({ guestToken: token, productId: backorder.id, quantity: 1 }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "QUANTITY_LIMIT_EXCEEDED",
      metadata: { max: "99" },
    });
    expect(await failure(h.carts.addItem({ guestToken: token, productId: backorder.id, quantity: 100 }))).toMatchObject({ code: Code.InvalidArgument, field: "quantity" });
    expect(await failure(h.carts.addItem({ guestToken: token, productId: uuidv7(), quantity: 1 }))).toMatchObject({ code: Code.NotFound, reason: "PRODUCT_NOT_FOUND" });
    // CART_MAX_LINES=3 in this harness.
    await h.carts.addItem({ guestToken: token, productId: (await h.product(100n, 5)).id, quantity: 1 });
    expect(await failure(h.carts.addItem({ guestToken: token, productId: (await h.product(100n, 5)).id, quantity: 1 }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CART_ITEM_LIMIT_REACHED",
    });
    expect(await failure(h.carts.getCart({ guestToken: "short" }))).toMatchObject({ code: Code.InvalidArgument, field: "guest_token" });
  });

  it("holds one currency: a product priced in another is refused, and a line whose price moves to another becomes unavailable", async () => {
    const euro = await h.product(900n, 10, { price: { amountMinor: 900n, currencyCode: "EUR" } });
    const dollar = await h.product(500n, 10);
    const { cart } = await h.carts.addItem({ productId: dollar.id, quantity: 1 });
    expect(cart!.currencyCode).toBe("USD");
    expect(await failure(h.carts.addItem({ guestToken: cart!.guestToken, productId: euro.id, quantity: 1 }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CURRENCY_MISMATCH",
    });
    await h.products.updateProduct({ product: { id: dollar.id, price: { amountMinor: 450n, currencyCode: "EUR" } }, updateMask: { paths: ["price"] } }, auth(h.admin));
    const read = (await h.carts.getCart({ guestToken: cart!.guestToken })).cart!;
    expect(read).toMatchObject({ currencyCode: "USD", subtotal: usd(0n) });
    expect(read.items[0]).toMatchObject({ available: false, lineTotal: usd(0n) });
    expect(read.warnings.find((w) => w.code === CartWarningCode.ITEM_UNAVAILABLE)).toMatchObject({ reason: "CURRENCY_MISMATCH" });
  });

  it("expires guest and customer carts apart, each counted from its last change", async () => {
    const p = await h.product(100n, 10);
    const user = await h.customer();
    const ttl = (c: Cart) => Number(c.expiresAt!.seconds - c.updatedAt!.seconds);
    const guest = (await h.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    const mine = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token))).cart!;
    expect(ttl(guest)).toBe(guestTtl / 1000);
    expect(ttl(mine)).toBe(customerTtl / 1000);
    // A change moves the expiry; a read does not.
    await h.sql("update carts set updated_at = updated_at - interval '1 minute', expires_at = expires_at - interval '1 minute' where id = $1", [guest.id]);
    const read = (await h.carts.getCart({ guestToken: guest.guestToken })).cart!;
    expect(Number(read.expiresAt!.seconds)).toBe(Number(guest.expiresAt!.seconds) - 60);
    const changed = (await h.carts.addItem({ guestToken: guest.guestToken, productId: p.id, quantity: 1 })).cart!;
    expect(ttl(changed)).toBe(guestTtl / 1000);
    expect(changed.expiresAt!.seconds).toBeGreaterThan(read.expiresAt!.seconds);
  });
});

describe("signing in", () => {
  it("merges the guest cart into the user's: quantities add up, clamped to stock; the guest token stops working", async () => {
    const a = await h.product(1000n, 20);
    const b = await h.product(500n, 20);
    const scarce = await h.product(200n, 5);
    const user = await h.customer();
    await h.carts.addItem({ productId: a.id, quantity: 1 }, auth(user.token));
    const mine = (await h.carts.addItem({ productId: scarce.id, quantity: 3 }, auth(user.token))).cart!;
    const guest = (await h.carts.addItem({ productId: a.id, quantity: 2 })).cart!;
    const token = guest.guestToken;
    await h.carts.addItem({ guestToken: token, productId: b.id, quantity: 1 });
    await h.carts.addItem({ guestToken: token, productId: scarce.id, quantity: 4 });

    const merged = await h.carts.mergeGuestCart({ guestToken: token }, auth(user.token));
    expect(merged).toMatchObject({ merged: true, mergedLineCount: 3 });
    const cart = merged.cart!;
    expect(cart.id).toBe(mine.id);
    expect(cart.guestToken).toBe("");
    expect(cart.items.map((i) => [i.productId, i.quantity])).toEqual([
      [a.id, 3],
      [scarce.id, 5],
      [b.id, 1],
    ]);
    expect(cart.subtotal).toMatchObject(usd(3n * 1000n + 5n * 200n + 500n));
    expect(cart.warnings.find((w) => w.code === CartWarningCode.QUANTITY_ADJUSTED)).toMatchObject({ productId: scarce.id, itemId: cart.items[1]!.id });

    expect((await h.carts.getCart({ guestToken: token })).cart!.id).toBe("");
    const again = await h.carts.mergeGuestCart({ guestToken: token }, auth(user.token));
    expect(again).toMatchObject({ merged: false, mergedLineCount: 0 });
    expect(again.cart).toMatchObject({ id: mine.id, version: cart.version });
    const old = (await h.carts.getCartById({ cartId: guest.id }, auth(h.admin))).cart!;
    expect(old).toMatchObject({ status: CartStatus.MERGED, mergedIntoCartId: mine.id, guestToken: "" });
    expect(await failure(h.carts.mergeGuestCart({ guestToken: token }))).toMatchObject({ code: Code.Unauthenticated });
  });

  it("caps a merged line at the line maximum and leaves out what can no longer be sold or does not fit", async () => {
    const plenty = await h.product(100n, 0, { allowBackorder: true });
    const gone = await h.product(300n, 10);
    const extra = await h.product(200n, 10);
    const user = await h.customer();
    await h.carts.addItem({ productId: plenty.id, quantity: 60 }, auth(user.token));
    await h.carts.addItem({ productId: (await h.product(100n, 10)).id, quantity: 1 }, auth(user.token));
    const guest = (await h.carts.addItem({ productId: plenty.id, quantity: 60 })).cart!;
    const token = guest.guestToken;
    await h.carts.addItem({ guestToken: token, productId: gone.id, quantity: 1 });
    await h.carts.addItem({ guestToken: token, productId: extra.id, quantity: 1 });
    await h.products.archiveProduct({ id: gone.id }, auth(h.admin));
    // The user cart now holds 3 lines, CART_MAX_LINES in this harness: no new guest line fits.
    const fourth = await h.product(100n, 10);
    await h.carts.addItem({ productId: fourth.id, quantity: 1 }, auth(user.token));

    const merged = await h.carts.mergeGuestCart({ guestToken: token }, auth(user.token));
    expect(merged).toMatchObject({ merged: true, mergedLineCount: 1 });
    const cart = merged.cart!;
    expect(cart.items.find((i) => i.productId === plenty.id)!.quantity).toBe(99);
    expect(cart.items).toHaveLength(3);
    expect(cart.warnings.filter((w) => w.code === CartWarningCode.QUANTITY_ADJUSTED).map((w) => w.productId)).toEqual([plenty.id]);
    expect(cart.warnings.filter((w) => w.code === CartWarningCode.ITEM_NOT_MERGED).map((w) => [w.productId, w.itemId])).toEqual([
      [gone.id, ""],
      [extra.id, ""],
    ]);
    expect((await h.carts.getCartById({ cartId: guest.id }, auth(h.admin))).cart!.status).toBe(CartStatus.MERGED);
  });

  it("merges a guest cart once when the same token is merged concurrently", async () => {
    const p = await h.product(100n, 50);
    const user = await h.customer();
    const guest = (await h.carts.addItem({ productId: p.id, quantity: 3 })).cart!;
    const results = await Promise.all(Array.from({ length: 4 }, () => h.carts.mergeGuestCart({ guestToken: guest.guestToken }, auth(user.token))));
    expect(results.filter((r) => r.merged)).toHaveLength(1);
    expect((await h.carts.getCart({}, auth(user.token))).cart!.items.map((i) => i.quantity)).toEqual([3]);
  });
});

describe("checkout (Order service)", () => {
  it("refuses a snapshot without discounts, converts once per order and publishes cart.converted", async () => {
    const p = await h.product(100n, 10);
    const user = await h.customer();
    const cart = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token))).cart!;
    const snapshot = await failure(h.carts.getCartForCheckout({ cartId: cart.id, userId: user.userId }, auth(h.order)));
    expect(snapshot).toMatchObject({ code: Code.Unavailable, message: expect.stringMatching(/discount service/) });
    expect(await failure(h.carts.getCartForCheckout({ cartId: cart.id, userId: uuidv7() }, auth(h.order)))).toMatchObject({ code: Code.NotFound, reason: "CART_NOT_FOUND" });
    expect(await failure(h.carts.getCartForCheckout({ cartId: cart.id, userId: user.userId }, auth(await h.issuer.service("product"))))).toMatchObject({
      code: Code.PermissionDenied,
      reason: "CALLER_NOT_ALLOWED",
    });
    expect(await failure(h.carts.getCartForCheckout({ cartId: cart.id, userId: user.userId, expectedVersion: 7n }, auth(h.order)))).toMatchObject({ code: Code.Aborted });

    const orderId = uuidv7();
    const converted = (await h.carts.markCartConverted({ cartId: cart.id, userId: user.userId, orderId }, auth(h.order))).cart!;
    expect(converted).toMatchObject({ status: CartStatus.CONVERTED, orderId });
    const retry = (await h.carts.markCartConverted({ cartId: cart.id, userId: user.userId, orderId }, auth(h.order))).cart!;
    expect(retry).toMatchObject({ status: CartStatus.CONVERTED, orderId, version: converted.version });
    expect(await failure(h.carts.markCartConverted({ cartId: cart.id, userId: user.userId, orderId: uuidv7() }, auth(h.order)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CART_ALREADY_CONVERTED",
      metadata: { order_id: orderId },
    });
    expect(await failure(h.carts.getCartForCheckout({ cartId: cart.id, userId: user.userId }, auth(h.order)))).toMatchObject({
      reason: "CART_NOT_ACTIVE",
      metadata: { status: "converted", order_id: orderId },
    });
    // The user's next cart is a new one.
    expect((await h.carts.getCart({}, auth(user.token))).cart!.id).toBe("");
    const events = await eventually(async () => {
      const found = (await cartEvents(CartConvertedSchema)).filter((e) => e.cartId === cart.id);
      return found.length > 0 ? found : undefined;
    });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ userId: user.userId, orderId });
  });
});

describe("admin views", () => {
  it("lists carts as stored, page by page, and shows any cart without its guest token", async () => {
    const p = await h.product(250n, 50);
    const user = await h.customer();
    const cart = (await h.carts.addItem({ productId: p.id, quantity: 2 }, auth(user.token))).cart!;
    const guest = (await h.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    expect((await h.carts.getCartById({ cartId: guest.id }, auth(h.admin))).cart).toMatchObject({ id: guest.id, guestToken: "", total: usd(250n) });
    expect(await failure(h.carts.getCartById({ cartId: uuidv7() }, auth(h.admin)))).toMatchObject({ code: Code.NotFound, reason: "CART_NOT_FOUND" });
    expect(await failure(h.carts.getCartById({ cartId: guest.id }, auth(user.token)))).toMatchObject({ code: Code.PermissionDenied });

    const mine = await h.carts.listCarts({ userId: user.userId }, auth(h.admin));
    expect(mine.carts).toHaveLength(1);
    expect(mine.carts[0]).toMatchObject({ id: cart.id, lineCount: 1, itemCount: 2, storedSubtotal: usd(500n), status: CartStatus.ACTIVE });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await h.carts.listCarts({ guestsOnly: true, statuses: [CartStatus.ACTIVE], pageSize: 2, pageToken, orderBy: "created_at asc" }, auth(h.admin));
      for (const c of page.carts) expect(c.userId).toBe("");
      seen.push(...page.carts.map((c) => c.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toContain(guest.id);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual(seen); // created_at asc; UUIDv7 ids follow creation time
  });
});

describe("the sweeper", () => {
  it("marks an idle user cart ABANDONED once and publishes cart.abandoned; the next change makes it ACTIVE", async () => {
    const p = await h.product(1500n, 10);
    const user = await h.customer();
    const cart = (await h.carts.addItem({ productId: p.id, quantity: 2 }, auth(user.token))).cart!;
    const guest = (await h.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    const sweeper = h.mesh.services.cart!.jobs.get("cart-sweeper") as IntervalJob;
    await sweeper.runNow();
    await sweeper.runNow();
    expect((await h.carts.getCart({}, auth(user.token))).cart).toMatchObject({ id: cart.id, status: CartStatus.ABANDONED, version: cart.version });
    expect((await h.carts.getCart({ guestToken: guest.guestToken })).cart!.status).toBe(CartStatus.ACTIVE);
    const events = await eventually(async () => {
      const found = (await cartEvents(CartAbandonedSchema)).filter((e) => e.cartId === cart.id);
      return found.length > 0 ? found : undefined;
    });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ userId: user.userId, currencyCode: "USD", itemCount: 2, subtotal: usd(3000n), total: usd(3000n) });
    expect(events[0]!.items[0]).toMatchObject({ productId: p.id, quantity: 2, unitPrice: usd(1500n), lineTotal: usd(3000n), productName: p.name });
    const changed = (await h.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token))).cart!;
    expect(changed).toMatchObject({ id: cart.id, status: CartStatus.ACTIVE });
  });

  it("purges expired carts: they are nobody's any more", async () => {
    const p = await h.product(100n, 10);
    const guest = (await h.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    await h.sql("update carts set expires_at = now() - interval '1 second' where id = $1", [guest.id]);
    expect((await h.carts.getCart({ guestToken: guest.guestToken })).cart!.id).toBe("");
    await (h.mesh.services.cart!.jobs.get("cart-sweeper") as IntervalJob).runNow();
    expect(await failure(h.carts.getCartById({ cartId: guest.id }, auth(h.admin)))).toMatchObject({ reason: "CART_NOT_FOUND" });
  });
});

describe("without the catalog", () => {
  let bare: CartHarness;
  beforeAll(async () => {
    bare = await startCartHarness({}, [], { product: false });
  });
  afterAll(() => bare?.stop());

  it("fails with UNAVAILABLE naming the product service, and still answers for an empty cart", async () => {
    const error = await failure(bare.carts.addItem({ productId: uuidv7(), quantity: 1 }));
    expect(error).toMatchObject({ code: Code.Unavailable, message: expect.stringMatching(/^product service unavailable/) });
    expect((await bare.carts.getCart({})).cart).toMatchObject({ id: "", version: 0n, currencyCode: "USD" });
  });
});

describe("with the Discount service", () => {
  let d: CartHarness;
  let discounts: ReturnType<typeof createClient<typeof DiscountService>>;
  beforeAll(async () => {
    d = await startCartHarness({}, [discountService]);
    discounts = createClient(DiscountService, createGrpcTransport({ baseUrl: d.mesh.url("discount") }));
  });
  afterAll(() => d?.stop());

  /** A coupon for `percent` % off, with a minimum subtotal. */
  async function coupon(percent: number, minSubtotal: bigint) {
    const { promotion } = await discounts.createPromotion(
      { name: `${percent}% off`, type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: percent * 100 }, currencyCode: "USD", isActive: true },
      auth(d.admin),
    );
    await discounts.addDiscountRule({ promotionId: promotion!.id, rule: { ruleType: DiscountRuleType.MIN_SUBTOTAL, value: { case: "minSubtotal", value: usd(minSubtotal) } } }, auth(d.admin));
    const code = unique("C").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 32);
    await discounts.createCoupon({ promotionId: promotion!.id, code }, auth(d.admin));
    return { code: code.toUpperCase(), promotionId: promotion!.id };
  }

  it("keeps a code applied before shopping as COUPON_NOT_APPLICABLE until the cart meets it", async () => {
    const { code } = await coupon(10, 5000n);
    const early = (await d.carts.applyCoupon({ code: code.toLowerCase() })).cart!;
    expect(early).toMatchObject({ couponCode: code, version: 1n, itemCount: 0 });
    expect(early.guestToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(early.warnings.map((w) => w.code)).toEqual([CartWarningCode.COUPON_NOT_APPLICABLE]);
    const p = await d.product(3000n, 10);
    const below = (await d.carts.addItem({ guestToken: early.guestToken, productId: p.id, quantity: 1 })).cart!;
    expect(below.warnings).toMatchObject([{ code: CartWarningCode.COUPON_NOT_APPLICABLE, reason: "MIN_SUBTOTAL_NOT_MET" }]);
    expect(below.total).toMatchObject(usd(3000n));
    const met = (await d.carts.updateItemQuantity({ guestToken: early.guestToken, line: { case: "product", value: { productId: p.id } }, quantity: 2 })).cart!;
    expect(met).toMatchObject({ subtotal: usd(6000n), discountTotal: usd(600n), total: usd(5400n), warnings: [] });

    // Applying a code the cart does not meet is refused and stores nothing.
    const other = await coupon(20, 100_000n);
    expect(await failure(d.carts.applyCoupon({ guestToken: early.guestToken, code: other.code }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "COUPON_MIN_SUBTOTAL_NOT_MET",
      metadata: { min_subtotal_minor: "100000" },
    });
    expect((await d.carts.getCart({ guestToken: early.guestToken })).cart!.couponCode).toBe(code);
  });

  it("checks per-customer conditions at ApplyCoupon for a signed-in user, and leaves them to checkout for a guest", async () => {
    const { code, promotionId } = await coupon(10, 0n);
    const { coupon: row } = await discounts.getCoupon({ lookup: { case: "code", value: code } }, auth(d.admin));
    await discounts.updateCoupon({ coupon: { id: row!.id, usageLimitPerUser: 1 }, updateMask: { paths: ["usage_limit_per_user"] } }, auth(d.admin));
    const p = await d.product(1000n, 10);
    const user = await d.customer();
    // The user has used the code once already (an order redeemed it).
    await discounts.redeemDiscounts(
      {
        orderId: uuidv7(),
        userId: user.userId,
        cart: { currencyCode: "USD", lines: [{ lineId: "1", productId: p.id, quantity: 1, unitPrice: usd(1000n) }], couponCodes: [code], shippingAmount: usd(0n), isFirstOrder: false },
        expectedTotalDiscount: usd(100n),
      },
      auth(d.order),
    );
    await d.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token));
    expect(await failure(d.carts.applyCoupon({ code }, auth(user.token)))).toMatchObject({ code: Code.FailedPrecondition, reason: "COUPON_USER_LIMIT_REACHED" });
    expect((await d.carts.getCart({}, auth(user.token))).cart!.couponCode).toBe("");
    // A guest is not known yet: the code is kept and gives its discount until checkout, after sign-in, decides.
    const guest = (await d.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    const applied = (await d.carts.applyCoupon({ guestToken: guest.guestToken, code })).cart!;
    expect(applied).toMatchObject({ couponCode: code, discountTotal: usd(100n), discounts: [{ promotionId }] });
    // A coupon for a list of customers needs sign-in.
    const { promotion: vip } = await discounts.createPromotion(
      { name: "VIP", type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 500 }, currencyCode: "USD", isActive: true, rules: [{ ruleType: DiscountRuleType.CUSTOMER_IDS, value: { case: "customerIds", value: { ids: [user.userId] } } }] },
      auth(d.admin),
    );
    const vipCode = unique("V").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 32).toUpperCase();
    await discounts.createCoupon({ promotionId: vip!.id, code: vipCode }, auth(d.admin));
    expect(await failure(d.carts.applyCoupon({ guestToken: guest.guestToken, code: vipCode }))).toMatchObject({ reason: "COUPON_SIGN_IN_REQUIRED" });
    expect((await d.carts.applyCoupon({ code: vipCode }, auth(user.token))).cart).toMatchObject({ couponCode: vipCode, discountTotal: usd(50n) });
  });

  it("gives checkout the cart priced with its discounts, and the guest's coupon wins at merge", async () => {
    const mine = await coupon(5, 0n);
    const guests = await coupon(15, 0n);
    const p = await d.product(2000n, 10);
    const user = await d.customer();
    await d.carts.addItem({ productId: p.id, quantity: 1 }, auth(user.token));
    await d.carts.applyCoupon({ code: mine.code }, auth(user.token));
    const guest = (await d.carts.addItem({ productId: p.id, quantity: 1 })).cart!;
    await d.carts.applyCoupon({ guestToken: guest.guestToken, code: guests.code });
    const merged = (await d.carts.mergeGuestCart({ guestToken: guest.guestToken }, auth(user.token))).cart!;
    // 2 × 20.00 = 40.00, 15% = 6.00.
    expect(merged).toMatchObject({ couponCode: guests.code, subtotal: usd(4000n), discountTotal: usd(600n), total: usd(3400n) });

    const { cart } = await d.carts.getCartForCheckout({ cartId: merged.id, userId: user.userId, expectedVersion: merged.version }, auth(d.order));
    expect(cart).toMatchObject({ id: merged.id, version: merged.version, total: usd(3400n), discounts: [{ promotionId: guests.promotionId, amount: usd(600n) }] });
    expect(cart!.items[0]!.discountAmount).toMatchObject(usd(600n));
    await d.carts.clearCart({}, auth(user.token));
    expect(await failure(d.carts.getCartForCheckout({ cartId: merged.id, userId: user.userId }, auth(d.order)))).toMatchObject({ reason: "CART_EMPTY" });
  });
});
