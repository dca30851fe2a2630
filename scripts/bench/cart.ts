/**
 * The Cart rows of `npm run bench` (issue 9): GetCart of a signed-in customer's
 * 20-line cart with 50 active automatic promotions, through the edge and gRPC
 * direct. Each GetCart reprices the cart: one BatchGetProducts, one
 * CalculateDiscounts (the category tree is cached), so the peer RPCs column
 * should read 2 and the statements column the cart's own reads.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { DiscountRuleType, DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import type { Bench } from "./run.ts";

const lines = 20;
const promotions = 50;

export async function cartBench(bench: Bench, mesh: TestMesh, edgeUrl: string, adminToken: string, say: (l: string) => void): Promise<void> {
  say(`cart: a ${lines}-line cart and ${promotions} active automatic promotions`);
  const admin = { headers: { authorization: `Bearer ${adminToken}` } };
  const products = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
  const inventory = createClient(InventoryService, createGrpcTransport({ baseUrl: mesh.url("product") }));
  const discounts = createClient(DiscountService, createGrpcTransport({ baseUrl: mesh.url("discount") }));
  const stamp = Date.now().toString(36);
  const ids: string[] = [];
  for (let i = 0; i < lines; i++) {
    const { product } = await products.createProduct(
      { sku: `CART-BENCH-${stamp}-${i}`, name: `Cart bench ${i}`, price: { amountMinor: BigInt(500 + 100 * i), currencyCode: "USD" }, status: ProductStatus.ACTIVE, isVisible: true },
      admin,
    );
    await inventory.adjustStock({ idempotencyKey: `cart-bench-${stamp}-${i}`, productId: product!.id, change: { case: "delta", value: 1000 }, reason: 1 }, admin);
    ids.push(product!.id);
  }
  // Stackable percentages of 1%, half of them limited to a product of the cart, some with a subtotal the cart does not reach.
  for (let i = 0; i < promotions; i++) {
    const { promotion } = await discounts.createPromotion(
      { name: `Bench ${i}`, type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 100 }, currencyCode: "USD", isAutomatic: true, stackable: true, priority: i, isActive: true },
      admin,
    );
    const rule =
      i % 2 === 0
        ? { ruleType: DiscountRuleType.PRODUCT_IDS, value: { case: "productIds" as const, value: { ids: [ids[i % lines]!] } } }
        : { ruleType: DiscountRuleType.MIN_SUBTOTAL, value: { case: "minSubtotal" as const, value: { amountMinor: BigInt(i % 5 === 0 ? 10_000_000 : 1_000), currencyCode: "USD" } } };
    await discounts.addDiscountRule({ promotionId: promotion!.id, rule }, admin);
  }
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const registered = await auth.register({ email: `cart-bench-${stamp}@example.test`, password: "quartz lantern cart river 7731" });
  const headers = { authorization: `Bearer ${registered.tokens!.accessToken}` };
  const carts = createClient(CartService, createGrpcTransport({ baseUrl: mesh.url("cart") }));
  for (const productId of ids) await carts.addItem({ productId, quantity: 2 }, { headers });
  const cart = (await carts.getCart({}, { headers })).cart!;
  say(`cart: ${cart.items.length} lines, subtotal ${cart.subtotal?.amountMinor}, ${cart.discounts.length} discounts, total ${cart.total?.amountMinor}, warnings ${cart.warnings.length}`);

  const getCart = { method: "ecommerce.cart.v1.CartService/GetCart", requests: [{}], headers };
  await bench.measure({ scenario: "GetCart", variant: "gRPC direct", servedByMesh: true, target: { kind: "rpc", protocol: "grpc", baseUrl: mesh.url("cart"), ...getCart } });
  await bench.measure({ scenario: "GetCart", variant: "via edge", servedByMesh: true, target: { kind: "rpc", protocol: "connect", baseUrl: edgeUrl, ...getCart } });
}
