/**
 * Test harness of the Cart service: real Product and Cart servers (and
 * Discount when its definition is passed) on throwaway databases and a
 * private nats-server (kit/testing), tokens from a TestIssuer instead of Auth,
 * gRPC clients, and a catalog helper.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { type Product, ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import type { AnyServiceDefinition } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { productService } from "../product/service.ts";
import { unique } from "../product/testing.ts";
import { cartService } from "./service.ts";

export { failure, unique } from "../product/testing.ts";

export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

export interface CartHarness {
  mesh: TestMesh;
  issuer: TestIssuer;
  carts: ReturnType<typeof createClient<typeof CartService>>;
  products: ReturnType<typeof createClient<typeof ProductService>>;
  inventory: ReturnType<typeof createClient<typeof InventoryService>>;
  admin: string;
  /** The Order service's credential (GetCartForCheckout, MarkCartConverted). */
  order: string;
  /** A new signed-in customer. */
  customer(): Promise<{ userId: string; token: string }>;
  /** An ACTIVE, visible product priced `priceMinor` USD with `stock` units (0: none). */
  product(priceMinor: bigint, stock: number, init?: Record<string, unknown>): Promise<Product>;
  /** Reads Cart's database directly ($n parameters). */
  sql<T extends object>(query: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

/** Product, then Cart, then `more` (e.g. Discount), all trusting the test issuer. */
export async function startCartHarness(env: Record<string, string> = {}, more: AnyServiceDefinition[] = [], options: { product?: boolean } = {}): Promise<CartHarness> {
  const issuer = new TestIssuer();
  const defs = [...(options.product === false ? [] : [productService]), cartService, ...more];
  const mesh = await startMesh(defs.map((d) => issuer.trustedBy(d)), env);
  const carts = createClient(CartService, createGrpcTransport({ baseUrl: mesh.url("cart") }));
  const products = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
  const inventory = createClient(InventoryService, createGrpcTransport({ baseUrl: mesh.url("product") }));
  const admin = await issuer.user(uuidv7(), ["customer", "admin"]);
  return {
    mesh,
    issuer,
    carts,
    products,
    inventory,
    admin,
    order: await issuer.service("order"),
    async customer() {
      const userId = uuidv7();
      return { userId, token: await issuer.user(userId) };
    },
    async product(priceMinor, stock, init = {}) {
      const { product } = await products.createProduct(
        { sku: unique("SKU"), name: unique("Product"), price: { amountMinor: priceMinor, currencyCode: "USD" }, status: ProductStatus.ACTIVE, isVisible: true, ...init },
        auth(admin),
      );
      if (stock > 0) {
        await inventory.adjustStock({ idempotencyKey: unique("adj"), productId: product!.id, change: { case: "delta", value: stock }, reason: 1 }, auth(admin));
      }
      return product!;
    },
    sql: <T extends object>(query: string, params: unknown[] = []) => sqlOf(mesh.services.cart!.ctx.orm.em.fork()).all<T>(query, params),
    stop: () => mesh.stop(),
  };
}
