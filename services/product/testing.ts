/**
 * Test harness of the Product service: a real server on a throwaway database
 * and a private nats-server (kit/testing), tokens from a TestIssuer instead of
 * Auth, gRPC clients of the five services, and readers of PRODUCT_EVENTS.
 * Other services are not started unless a test passes stand-ins for them.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ReviewService } from "../../gen/ecommerce/product/v1/review_pb.js";
import { SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import { sqlOf } from "../../kit/sql.ts";
import type { AnyServiceDefinition } from "../../kit/server.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { productService } from "./service.ts";

export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

export interface ProductHarness {
  mesh: TestMesh;
  issuer: TestIssuer;
  nc: NatsConnection;
  products: ReturnType<typeof createClient<typeof ProductService>>;
  categories: ReturnType<typeof createClient<typeof CategoryService>>;
  inventory: ReturnType<typeof createClient<typeof InventoryService>>;
  reviews: ReturnType<typeof createClient<typeof ReviewService>>;
  search: ReturnType<typeof createClient<typeof SearchService>>;
  /** An admin's token, a customer's, and a service credential (for INTERNAL RPCs). */
  admin: string;
  adminId: string;
  customer: string;
  service: string;
  /** The Returns service's credential: the one caller of RestockItems. */
  returnsService: string;
  /** A statement on the service's database, `$n` parameters bound (kit/sql.ts). */
  sql<T extends object>(query: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

/** `peers` are stand-ins for other services (started after Product), sharing the test issuer. */
export async function startProductHarness(env: Record<string, string> = {}, peers: AnyServiceDefinition[] = []): Promise<ProductHarness> {
  const issuer = new TestIssuer();
  const mesh = await startMesh([productService, ...peers].map((def) => issuer.trustedBy(def)), env);
  const nc = await natsConnect({ servers: mesh.nats.url });
  const transport = createGrpcTransport({ baseUrl: mesh.url("product") });
  const adminId = uuidv7();
  return {
    mesh,
    issuer,
    nc,
    products: createClient(ProductService, transport),
    categories: createClient(CategoryService, transport),
    inventory: createClient(InventoryService, transport),
    reviews: createClient(ReviewService, transport),
    search: createClient(SearchService, transport),
    admin: await issuer.user(adminId, ["customer", "admin"]),
    adminId,
    customer: await issuer.user(uuidv7()),
    service: await issuer.service("order"),
    returnsService: await issuer.service("returns"),
    sql: <T extends object>(query: string, params: unknown[] = []) => sqlOf(mesh.services.product!.ctx.orm.em.fork()).all<T>(query, params),
    async stop() {
      await nc.close();
      await mesh.stop();
    },
  };
}

export { failure } from "../../kit/testing/failure.ts";

let counter = 0;
/** A unique SKU / name suffix for a test. */
export const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}`;

/** An ACTIVE, visible product with `stock` units at the default location. */
export async function activeProduct(h: ProductHarness, init: Record<string, unknown> = {}, stock = 0) {
  const { product } = await h.products.createProduct(
    {
      sku: unique("SKU"),
      name: unique("Product"),
      price: { amountMinor: 1999n, currencyCode: "USD" },
      status: ProductStatus.ACTIVE,
      isVisible: true,
      ...init,
    },
    auth(h.admin),
  );
  if (stock > 0) {
    await h.inventory.adjustStock(
      { idempotencyKey: unique("adj"), productId: product!.id, change: { case: "delta", value: stock }, reason: 1 },
      auth(h.admin),
    );
  }
  return product!;
}

/** Every event of one type currently on PRODUCT_EVENTS, oldest first. */
export function productEvents<D extends DescMessage>(h: ProductHarness, schema: D): Promise<MessageShape<D>[]> {
  return eventsOnStream(h.nc, "PRODUCT_EVENTS", schema);
}
