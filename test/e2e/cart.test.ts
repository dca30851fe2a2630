/**
 * Issue 9's shopper, end to end through the edge with a browser-style Connect
 * client (HTTP/1.1, JSON) and the real Auth, Product, Cart and Discount
 * services: a guest fills a cart, signs up, logs in, merges it, applies a
 * coupon and sees totals that match a hand computation; then the catalog
 * changes a price and archives a product, and a stale version is refused.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { CartService, CartWarningCode } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { DiscountRuleType, DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { startEdge, type RunningEdge } from "../../gateway/edge.ts";
import { errorReason } from "../../kit/errors.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { authService } from "../../services/auth/service.ts";
import { cartService } from "../../services/cart/service.ts";
import { discountService } from "../../services/discount/service.ts";
import { productService } from "../../services/product/service.ts";

let mesh: TestMesh;
let edge: RunningEdge;
let admin: string;

const viaEdge = () => createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1", useBinaryFormat: false });
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const usd = (amountMinor: bigint) => ({ amountMinor, currencyCode: "USD" });
const password = "velvet otter maple drum 4711";
const stamp = Date.now().toString(36);

/** A signed-in admin: registered, promoted with the documented create-admin command, signed in again. */
async function adminToken(): Promise<string> {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const email = `cart-admin-${stamp}@example.test`;
  await auth.register({ email, password });
  execFileSync(process.execPath, [join(import.meta.dirname, "..", "..", "services", "auth", "create-admin.ts"), "--email", email], {
    env: { ...process.env, DATABASE_URL: mesh.services.auth!.ctx.config.databaseUrl, LOG_LEVEL: "silent" },
    stdio: "ignore",
  });
  return (await auth.login({ email, password })).tokens!.accessToken;
}

beforeAll(async () => {
  mesh = await startMesh([authService, productService, cartService, discountService]);
  edge = await startEdge({
    port: 0,
    host: "127.0.0.1",
    upstreams: { auth: mesh.url("auth"), product: mesh.url("product"), cart: mesh.url("cart"), discount: mesh.url("discount") },
    logLevel: "silent",
  });
  admin = await adminToken();
});

afterAll(async () => {
  await edge?.stop();
  await mesh?.stop();
});

async function product(name: string, priceMinor: bigint, categoryIds: string[] = []) {
  const products = createClient(ProductService, viaEdge());
  const { product } = await products.createProduct(
    { sku: `${name}-${stamp}`, name: `${name} ${stamp}`, price: usd(priceMinor), status: ProductStatus.ACTIVE, isVisible: true, categoryIds },
    bearer(admin),
  );
  await createClient(InventoryService, viaEdge()).adjustStock({ idempotencyKey: `stock-${name}-${stamp}`, productId: product!.id, change: { case: "delta", value: 20 }, reason: 1 }, bearer(admin));
  return product!;
}

describe("a shopper's cart through the edge", () => {
  it("guest cart → sign up → log in → merge → coupon, totals as computed by hand; then a price change, an archived product, a stale version", async () => {
    const categories = createClient(CategoryService, viaEdge());
    const clothing = (await categories.createCategory({ name: `Clothing ${stamp}`, isActive: true }, bearer(admin))).category!;
    const shirts = (await categories.createCategory({ name: `Shirts ${stamp}`, parentId: clothing.id, isActive: true }, bearer(admin))).category!;
    const shirt = await product("shirt", 2500n, [shirts.id]);
    const mug = await product("mug", 1000n);
    // 10% off clothing, through a coupon: the shirt is in a subcategory, so the cart must send the category's ancestors.
    const discounts = createClient(DiscountService, viaEdge());
    const { promotion } = await discounts.createPromotion(
      {
        name: "Clothing -10%",
        type: PromotionType.PERCENTAGE,
        value: { case: "percentOffBps", value: 1000 },
        currencyCode: "USD",
        isActive: true,
      },
      bearer(admin),
    );
    await discounts.addDiscountRule(
      { promotionId: promotion!.id, rule: { ruleType: DiscountRuleType.CATEGORY_IDS, value: { case: "categoryIds", value: { ids: [clothing.id] } } } },
      bearer(admin),
    );
    await discounts.createCoupon({ promotionId: promotion!.id, code: `SAVE10${stamp}` }, bearer(admin));

    const carts = createClient(CartService, viaEdge());
    const first = (await carts.addItem({ productId: shirt.id, quantity: 2 })).cart!;
    const guestToken = first.guestToken;
    expect(guestToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const guestCart = (await carts.addItem({ guestToken, productId: mug.id, quantity: 1 })).cart!;
    expect(guestCart.total).toMatchObject(usd(2n * 2500n + 1000n));
    expect(guestCart.warnings).toEqual([]);

    const auth = createClient(AuthService, viaEdge());
    const email = `cart-shopper-${stamp}@example.test`;
    await auth.register({ email, password, firstName: "Grace" });
    const token = (await auth.login({ email, password })).tokens!.accessToken;
    const merged = await carts.mergeGuestCart({ guestToken }, bearer(token));
    expect(merged).toMatchObject({ merged: true, mergedLineCount: 2 });
    expect(merged.cart!.guestToken).toBe("");
    expect((await carts.getCart({ guestToken })).cart!.id).toBe("");

    const applied = (await carts.applyCoupon({ code: ` save10${stamp} `, expectedVersion: merged.cart!.version }, bearer(token))).cart!;
    // By hand: 2 × 25.00 + 10.00 = 60.00; 10% of the clothing line (50.00) = 5.00; total 55.00.
    expect(applied.couponCode).toBe(`SAVE10${stamp}`.toUpperCase());
    expect(applied.subtotal).toMatchObject(usd(6000n));
    expect(applied.discountTotal).toMatchObject(usd(500n));
    expect(applied.total).toMatchObject(usd(5500n));
    expect(applied.discounts).toMatchObject([{ promotionId: promotion!.id, couponCode: `SAVE10${stamp}`.toUpperCase(), amount: usd(500n) }]);
    const lines = Object.fromEntries(applied.items.map((i) => [i.productId, i]));
    expect(lines[shirt.id]!.discountAmount).toMatchObject(usd(500n));
    expect(lines[mug.id]!.discountAmount).toMatchObject(usd(0n));
    expect(applied.warnings).toEqual([]);

    const unknown = await carts.applyCoupon({ code: "NO-SUCH-CODE" }, bearer(token)).catch((e: unknown) => ConnectError.from(e));
    expect(unknown).toMatchObject({ code: Code.FailedPrecondition });
    expect(errorReason(unknown)).toBe("COUPON_NOT_FOUND");

    // The catalog raises the shirt to 30.00: 2 × 30.00 + 10.00 = 70.00, 10% of 60.00 = 6.00, total 64.00.
    await createClient(ProductService, viaEdge()).updateProduct({ product: { id: shirt.id, price: usd(3000n) }, updateMask: { paths: ["price"] } }, bearer(admin));
    const repriced = (await carts.getCart({}, bearer(token))).cart!;
    expect(repriced.items.find((i) => i.productId === shirt.id)).toMatchObject({ priceChanged: true, priceAtAdd: usd(2500n), unitPrice: usd(3000n), lineTotal: usd(6000n) });
    expect(repriced).toMatchObject({ subtotal: usd(7000n), discountTotal: usd(600n), total: usd(6400n) });
    expect(repriced.warnings.map((w) => w.code)).toEqual([CartWarningCode.PRICE_CHANGED]);

    // The mug is archived: it stays as an unavailable line with a warning, out of the totals.
    await createClient(ProductService, viaEdge()).archiveProduct({ id: mug.id }, bearer(admin));
    const archived = (await carts.getCart({}, bearer(token))).cart!;
    expect(archived.items.find((i) => i.productId === mug.id)).toMatchObject({ available: false, lineTotal: usd(0n) });
    expect(archived).toMatchObject({ subtotal: usd(6000n), discountTotal: usd(600n), total: usd(5400n), itemCount: 3 });
    expect(archived.warnings.map((w) => w.code).sort()).toEqual([CartWarningCode.ITEM_UNAVAILABLE, CartWarningCode.PRICE_CHANGED].sort());

    const stale = await carts.addItem({ productId: shirt.id, quantity: 1, expectedVersion: merged.cart!.version }, bearer(token)).catch((e: unknown) => ConnectError.from(e));
    expect(stale).toMatchObject({ code: Code.Aborted });
    expect(errorReason(stale)).toBe("CART_VERSION_MISMATCH");

    // Removing the coupon takes the discount away.
    const removed = (await carts.removeCoupon({}, bearer(token))).cart!;
    expect(removed).toMatchObject({ couponCode: "", discountTotal: usd(0n), total: usd(6000n) });
  });
});
