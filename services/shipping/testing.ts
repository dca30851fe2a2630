/**
 * Test harness of the Shipping service: a real server on a throwaway database
 * and a private nats-server (kit/testing), tokens from a TestIssuer instead of
 * Auth, and a client per caller (admin, customer, guest, the Order service).
 * A real Product server is the catalog rate quotes take item weights from.
 * The Order service is not built yet: a stand-in built on the kit (a real
 * server, real HTTP/2, the kit's policy checks) answers GetOrderInternal with
 * the orders a test puts in `orders`.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { create } from "@bufbuild/protobuf";
import { type Order, OrderSchema, OrderService, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { type Product, ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { productService } from "../product/service.ts";
import { defineService } from "../../kit/server.ts";
import { notFound } from "../../kit/errors.ts";
import { money } from "../../kit/money.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { shippingService } from "./service.ts";

export { failure } from "../../kit/testing/failure.ts";

export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

export const eur = (amountMinor: bigint) => money(amountMinor, "EUR");

/** Stand-in of the Order service's GetOrderInternal: answers from `orders`. */
function orderStandIn(orders: Map<string, Order>) {
  return defineService({
    name: "order",
    entities: [],
    migrations: [],
    routes(router) {
      router.service(OrderService, {
        getOrderInternal: (req) => {
          const order = orders.get(req.orderId);
          if (!order) throw notFound("order", req.orderId);
          return { order };
        },
      });
    },
  });
}

export interface ShippingHarness {
  issuer: TestIssuer;
  mesh: TestMesh;
  nc: NatsConnection;
  /** Orders the Order stand-in knows, by id. */
  orders: Map<string, Order>;
  shipping: ReturnType<typeof createClient<typeof ShippingService>>;
  products: ReturnType<typeof createClient<typeof ProductService>>;
  /** A product in the catalog weighing `weightGrams` a unit (0: unknown), ACTIVE and visible unless `init` says otherwise. */
  product(weightGrams: number, init?: { status?: ProductStatus; isVisible?: boolean }): Promise<Product>;
  admin: string;
  customer: string;
  /** Service credentials of the INTERNAL caller (order) and of a service that is not one. */
  order: string;
  cart: string;
  stop(): Promise<void>;
}

/** `options.product: false` runs no catalog (its address answers nothing): the rate quotes' UNAVAILABLE. */
export async function startShippingHarness(env: Record<string, string> = {}, options: { product?: boolean } = {}): Promise<ShippingHarness> {
  const issuer = new TestIssuer();
  const orders = new Map<string, Order>();
  const mesh = await startMesh([orderStandIn(orders), ...(options.product === false ? [] : [productService]), shippingService].map((def) => issuer.trustedBy(def)), env);
  const nc = await natsConnect({ servers: mesh.nats.url });
  const products = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
  const admin = await issuer.user(uuidv7(), ["customer", "admin"]);
  return {
    mesh,
    nc,
    orders,
    issuer,
    shipping: createClient(ShippingService, createGrpcTransport({ baseUrl: mesh.url("shipping") })),
    products,
    async product(weightGrams, init = {}) {
      const { product } = await products.createProduct(
        { sku: `SKU-${uuidv7()}`, name: `Parcel ${uuidv7()}`, price: money(1000n, "EUR"), status: ProductStatus.ACTIVE, isVisible: true, weightGrams, ...init },
        auth(admin),
      );
      return product!;
    },
    admin,
    customer: await issuer.user(uuidv7()),
    order: await issuer.service("order"),
    cart: await issuer.service("cart"),
    async stop() {
      await nc.close();
      await mesh.stop();
    },
  };
}

/** An active carrier with one active method (min..max days), created by the admin. */
export async function carrierWithMethod(h: ShippingHarness, code: string, days: [number, number] = [2, 4], methodCode = "standard") {
  const { carrier } = await h.shipping.createCarrier(
    { code, name: `${code.toUpperCase()} Parcel`, trackingUrlTemplate: `https://track.example.com/${code}/{tracking_number}`, isActive: true },
    auth(h.admin),
  );
  const { shippingMethod } = await h.shipping.createShippingMethod(
    { carrierId: carrier!.id, code: methodCode, name: `${methodCode} (${days[0]}-${days[1]} days)`, minDays: days[0], maxDays: days[1], isActive: true },
    auth(h.admin),
  );
  return { carrier: carrier!, method: shippingMethod! };
}

/** A CONFIRMED order of `userId` shipped to Germany with the given line quantities; registered with the Order stand-in. */
export function orderOf(h: ShippingHarness, userId: string, quantities: number[], init: Omit<MessageInitShape<typeof OrderSchema>, "$typeName"> = {}): Order {
  const base: MessageInitShape<typeof OrderSchema> = {
    id: uuidv7(),
    userId,
    status: OrderStatus.CONFIRMED,
    items: quantities.map((quantity) => ({ id: uuidv7(), productId: uuidv7(), quantity })),
    shippingAddress: { firstName: "Ada", lastName: "Lovelace", addressLine1: "1 Main St", city: "Berlin", postalCode: "10115", countryCode: "DE" },
  };
  const order = create(OrderSchema, { ...base, ...init } as MessageInitShape<typeof OrderSchema>);
  h.orders.set(order.id, order);
  return order;
}

/** A customer token for a given user id (the customer of an order). */
export const customerToken = (h: ShippingHarness, userId: string) => h.issuer.user(userId);
