/**
 * Test harness of the Order service: the whole checkout mesh (Product, Cart,
 * Discount, Shipping, Payment and Order) on throwaway databases and a private
 * nats-server (kit/testing), tokens from a TestIssuer instead of Auth, gRPC
 * clients, and helpers for a catalog, a shipping method, carts and checkouts.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { OrderService, type PlaceOrderRequest, type PlaceOrderRequestSchema } from "../../gen/ecommerce/order/v1/order_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { type Product, ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { money } from "../../kit/money.ts";
import { type RunningService, runService } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { jetstream } from "@nats-io/jetstream";
import { connect as natsConnect } from "@nats-io/transport-node";
import { file_ecommerce_auth_v1_events, UserRegisteredSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { streamOf, subjectOf } from "../../kit/events/contracts.ts";
import { userService } from "../user/service.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { cartService } from "../cart/service.ts";
import { discountService } from "../discount/service.ts";
import { paymentService } from "../payment/service.ts";
import { productService } from "../product/service.ts";
import { shippingService } from "../shipping/service.ts";
import { orderService } from "./service.ts";

export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
export const usd = (amountMinor: bigint) => money(amountMinor, "USD");

let counter = 0;
export const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${++counter}`;

export { failure } from "../../kit/testing/failure.ts";

export const address = { firstName: "Ada", lastName: "Lovelace", addressLine1: "1 Main St", city: "San Francisco", state: "CA", postalCode: "94105", countryCode: "US" };

export interface OrderHarness {
  mesh: TestMesh;
  issuer: TestIssuer;
  orders: ReturnType<typeof createClient<typeof OrderService>>;
  carts: ReturnType<typeof createClient<typeof CartService>>;
  products: ReturnType<typeof createClient<typeof ProductService>>;
  inventory: ReturnType<typeof createClient<typeof InventoryService>>;
  discounts: ReturnType<typeof createClient<typeof DiscountService>>;
  shipping: ReturnType<typeof createClient<typeof ShippingService>>;
  admin: string;
  /** The shipping method every test ships with (USD, every country, 5.00, free above 500.00). */
  methodId: string;
  customer(): Promise<{ userId: string; token: string }>;
  product(priceMinor: bigint, stock: number): Promise<Product>;
  /** A customer with a User profile (from Auth's user.registered; needs `{ user: true }`). */
  registered(): Promise<{ userId: string; token: string }>;
  users: ReturnType<typeof createClient<typeof UserService>>;
  /** A new customer with a cart holding `lines` (product, quantity). */
  shopper(lines: [Product, number][]): Promise<{ userId: string; token: string; cartId: string }>;
  /** A PlaceOrder request for the shopper's cart. */
  request(cartId: string, init?: Partial<MessageInitShape<typeof PlaceOrderRequestSchema>>): MessageInitShape<typeof PlaceOrderRequestSchema>;
  /** A coupon code of a percentage promotion (bps), with `init` on the promotion. */
  coupon(bps: number, init?: Record<string, unknown>): Promise<string>;
  /** On hand and reserved of a product. */
  stock(productId: string): Promise<{ available: number; reserved: number; onHand: number }>;
  sql<T extends object>(service: "order" | "product" | "discount" | "payment" | "cart", query: string, params?: unknown[]): Promise<T[]>;
  /** Stops the Order service and starts it again on the same database with `env` added. */
  restartOrder(env?: Record<string, string>): Promise<RunningService>;
  /** Stops Payment (as a crash would, then a restart) and starts it again on the same database. */
  restartPayment(): Promise<RunningService>;
  stop(): Promise<void>;
}

export async function startOrderHarness(env: Record<string, string> = {}, options: { user?: boolean } = {}): Promise<OrderHarness> {
  const issuer = new TestIssuer();
  const defs = [...(options.user ? [userService] : []), productService, discountService, cartService, shippingService, paymentService, orderService];
  const mesh = await startMesh(
    defs.map((d) => issuer.trustedBy(d)),
    { PAYMENT_SANDBOX_WEBHOOK_URL: "off", ORDER_RECOVERY_EVERY_MS: "200", CART_RATE_LIMIT_WRITES: "100000", DISCOUNT_RATE_LIMIT_CODE_CHECKS: "100000", ...env },
  );
  const client = <S extends Parameters<typeof createClient>[0]>(service: S, name: Parameters<TestMesh["url"]>[0]) =>
    createClient(service, createGrpcTransport({ baseUrl: mesh.url(name) }));
  const orders = client(OrderService, "order");
  const carts = client(CartService, "cart");
  const products = client(ProductService, "product");
  const inventory = client(InventoryService, "product");
  const discounts = client(DiscountService, "discount");
  const shipping = client(ShippingService, "shipping");
  const admin = await issuer.user(uuidv7(), ["customer", "admin"]);
  const code = `c${Date.now().toString(36)}`;
  const { carrier } = await shipping.createCarrier({ code, name: "Test Parcel", trackingUrlTemplate: "https://track.example.com/{tracking_number}", isActive: true }, auth(admin));
  const { shippingMethod } = await shipping.createShippingMethod({ carrierId: carrier!.id, code: "standard", name: "Standard", minDays: 2, maxDays: 4, isActive: true }, auth(admin));
  await shipping.createShippingRate({ methodId: shippingMethod!.id, minWeightGrams: 0, maxWeightGrams: 1_000_000, price: usd(500n), freeAbove: usd(50_000n) }, auth(admin));
  const users = client(UserService, "user");
  const nc = options.user ? await natsConnect({ servers: mesh.nats.url }) : undefined;
  if (nc) {
    const authStream = streamOf(file_ecommerce_auth_v1_events);
    await (await jetstream(nc).jetstreamManager()).streams.add({ name: authStream.name, subjects: authStream.subjects }).catch(() => undefined);
  }
  const sqlIn = (name: "order" | "product" | "discount" | "payment" | "cart") => sqlOf(mesh.services[name]!.ctx.orm.em.fork());
  let orderRunning = mesh.services.order!;
  const restarted: RunningService[] = [];
  const h: OrderHarness = {
    mesh,
    issuer,
    orders,
    carts,
    products,
    inventory,
    discounts,
    shipping,
    admin,
    methodId: shippingMethod!.id,
    users,
    async registered() {
      const userId = uuidv7();
      const eventId = uuidv7();
      const event = create(UserRegisteredSchema, { eventId, occurredAt: timestampNow(), userId, email: `${userId}@example.test`, firstName: "Ada", lastName: "Lovelace", roles: ["customer"] });
      await jetstream(nc!).publish(subjectOf(UserRegisteredSchema), toBinary(UserRegisteredSchema, event), { msgID: eventId });
      const token = await issuer.user(userId, ["customer"], `${userId}@example.test`);
      await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined), 10_000, "profile created");
      return { userId, token };
    },
    async customer() {
      const userId = uuidv7();
      return { userId, token: await issuer.user(userId) };
    },
    async product(priceMinor, stock) {
      const { product } = await products.createProduct(
        { sku: unique("SKU"), name: unique("Product"), price: usd(priceMinor), status: ProductStatus.ACTIVE, isVisible: true, weightGrams: 500 },
        auth(admin),
      );
      if (stock > 0) await inventory.adjustStock({ idempotencyKey: unique("adj"), productId: product!.id, change: { case: "delta", value: stock }, reason: 1 }, auth(admin));
      return product!;
    },
    async shopper(lines) {
      const c = await h.customer();
      let cartId = "";
      for (const [p, quantity] of lines) cartId = (await carts.addItem({ productId: p.id, quantity }, auth(c.token))).cart!.id;
      return { ...c, cartId };
    },
    request: (cartId, init = {}) => ({
      cartId,
      shippingDestination: { case: "shippingAddress", value: address },
      shippingMethodId: shippingMethod!.id,
      paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_success" } },
      idempotencyKey: uuidv7(),
      ...init,
    }) as MessageInitShape<typeof PlaceOrderRequestSchema>,
    async coupon(bps, init = {}) {
      const { promotion } = await discounts.createPromotion(
        { name: unique("promo"), type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: bps }, isActive: true, ...init } as never,
        auth(admin),
      );
      const couponCode = `CODE${Date.now().toString(36).toUpperCase()}${++counter}`;
      await discounts.createCoupon({ promotionId: promotion!.id, code: couponCode }, auth(admin));
      return couponCode;
    },
    async stock(productId) {
      const rows = await sqlIn("product").all<{ on_hand: number; reserved: number }>(
        "select coalesce(sum(quantity), 0)::int as on_hand, coalesce(sum(reserved_quantity), 0)::int as reserved from product_inventory where product_id = $1",
        [productId],
      );
      const r = rows[0]!;
      return { onHand: r.on_hand, reserved: r.reserved, available: r.on_hand - r.reserved };
    },
    sql: <T extends object>(name: "order" | "product" | "discount" | "payment" | "cart", query: string, params: unknown[] = []) => sqlIn(name).all<T>(query, params),
    async restartOrder(more = {}) {
      const url = orderRunning.ctx.config.databaseUrl;
      const port = orderRunning.port;
      await orderRunning.stop();
      orderRunning = await runService(issuer.trustedBy(orderService), { ...mesh.env, ...env, PORT: String(port), DATABASE_URL: url, ...more });
      mesh.services.order = orderRunning;
      restarted.push(orderRunning);
      return orderRunning;
    },
    async restartPayment() {
      const running = mesh.services.payment!;
      const url = running.ctx.config.databaseUrl;
      await running.stop();
      const again = await runService(issuer.trustedBy(paymentService), { ...mesh.env, ...env, PORT: String(running.port), DATABASE_URL: url });
      mesh.services.payment = again;
      restarted.push(again);
      return again;
    },
    async stop() {
      await nc?.close();
      for (const r of restarted) await r.stop().catch(() => undefined);
      await mesh.stop();
    },
  };
  return h;
}

export type { PlaceOrderRequest };
