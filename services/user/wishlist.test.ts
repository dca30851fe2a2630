/**
 * Wishlist snapshots against real User and Product servers sharing one
 * private nats-server: the snapshot taken at AddToWishlist (BatchGetProducts)
 * and kept current from PRODUCT_EVENTS. Auth is not started: user.registered
 * is published onto AUTH_EVENTS as Auth would, tokens come from a TestIssuer.
 * Stale events are published onto PRODUCT_EVENTS by the test itself.
 */
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { randomBytes } from "node:crypto";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_ecommerce_auth_v1_events, UserRegisteredSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { ProductOutOfStockSchema, ProductUpdatedSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import { InventoryService, StockAdjustmentReason } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus, StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { UserService, type WishlistItem } from "../../gen/ecommerce/user/v1/user_pb.js";
import { streamOf, subjectOf } from "../../kit/events/contracts.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { ServiceDefinition } from "../../kit/server.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { productService } from "../product/service.ts";
import { userService } from "./service.ts";
import { failure } from "../../kit/testing/failure.ts";

const issuer = new TestIssuer();
let mesh: TestMesh;
let nc: NatsConnection;
let js: JetStreamClient;
let users: ReturnType<typeof createClient<typeof UserService>>;
let products: ReturnType<typeof createClient<typeof ProductService>>;
let inventory: ReturnType<typeof createClient<typeof InventoryService>>;
let admin: { headers: { authorization: string } };

const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const usd = (amountMinor: bigint) => ({ amountMinor, currencyCode: "USD" });

/** Publishes an event the way the owning service's outbox relay does (Nats-Msg-Id = event id). */
async function publish<D extends DescMessage>(schema: D, init: Omit<MessageInitShape<D>, "eventId" | "occurredAt">, at: Date): Promise<string> {
  const eventId = uuidv7();
  const message = create(schema, { ...init, eventId, occurredAt: timestampFromDate(at) } as unknown as MessageInitShape<D>);
  await js.publish(subjectOf(schema), toBinary(schema, message), { msgID: eventId });
  return eventId;
}

/** A customer with a profile (from user.registered). */
async function customer(): Promise<{ userId: string; token: string }> {
  const userId = uuidv7();
  await publish(UserRegisteredSchema, { userId, email: `${userId}@example.test`, firstName: "Ada", lastName: "Lovelace", roles: ["customer"] }, new Date());
  const token = await issuer.user(userId);
  await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined), 10_000, "profile created");
  return { userId, token };
}

/** Created as a draft, then activated, by an admin through ProductService; with `stock` units and an image. */
async function productOnSale(stock = 3) {
  const sku = `W-${randomBytes(5).toString("hex")}`;
  const { product } = await products.createProduct({ sku, name: `Lamp ${sku}`, price: usd(1999n), status: ProductStatus.DRAFT, isVisible: true }, admin);
  const id = product!.id;
  await products.addImage({ productId: id, url: `https://img.example.test/${sku}.jpg` }, admin);
  await products.updateProduct({ product: { id, status: ProductStatus.ACTIVE }, updateMask: { paths: ["status"] } }, admin);
  if (stock > 0) await adjustStock(id, stock);
  return { id, sku, name: `Lamp ${sku}`, imageUrl: `https://img.example.test/${sku}.jpg` };
}

const adjustStock = (productId: string, delta: number) =>
  inventory.adjustStock(
    { idempotencyKey: `adj-${randomBytes(6).toString("hex")}`, productId, change: { case: "delta", value: delta }, reason: delta > 0 ? StockAdjustmentReason.RECEIVED : StockAdjustmentReason.DAMAGED },
    admin,
  );

async function itemOf(token: string, productId: string): Promise<WishlistItem | undefined> {
  return (await users.listWishlist({ pageSize: 100 }, auth(token))).items.find((i) => i.productId === productId);
}

/** Waits until the customer's item for the product satisfies `ok`. */
function eventuallyItem(token: string, productId: string, ok: (i: WishlistItem) => boolean, what: string) {
  return eventually(async () => {
    const item = await itemOf(token, productId);
    return item && ok(item) ? item : undefined;
  }, 15_000, what);
}

/** Waits until the User service has processed (and committed) an event through the named consumer. */
function processed(eventId: string, consumer: string) {
  return eventually(async () => {
    const row = await sqlOf(mesh.services.user!.ctx.orm.em.fork()).one<{ processed: boolean }>(
      "select processed from user_event_logs where event_id = $1 and source = $2",
      [eventId, consumer],
    );
    return row?.processed ? true : undefined;
  }, 15_000, `${consumer} processed ${eventId}`);
}


beforeAll(async () => {
  mesh = await startMesh([productService, userService].map((def) => issuer.trustedBy(def)));
  nc = await natsConnect({ servers: mesh.nats.url });
  js = jetstream(nc);
  const authStream = streamOf(file_ecommerce_auth_v1_events);
  await (await js.jetstreamManager()).streams.add({ name: authStream.name, subjects: authStream.subjects }).catch(() => undefined);
  users = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
  const productTransport = createGrpcTransport({ baseUrl: mesh.url("product") });
  products = createClient(ProductService, productTransport);
  inventory = createClient(InventoryService, productTransport);
  admin = auth(await issuer.user(uuidv7(), ["customer", "admin"]));
});

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
});

describe("wishlist product snapshots", () => {
  it("stores the catalog's snapshot at AddToWishlist and follows a price change through product.updated", async () => {
    const { token } = await customer();
    const product = await productOnSale();
    const added = (await users.addToWishlist({ productId: product.id }, auth(token))).item!;
    expect(added).toMatchObject({
      productId: product.id,
      productName: product.name,
      productImageUrl: product.imageUrl,
      productPrice: { amountMinor: 1999n, currencyCode: "USD" },
      inStock: true,
      productAvailable: true,
    });

    await products.updateProduct({ product: { id: product.id, price: usd(1499n), name: "Lamp, now cheaper" }, updateMask: { paths: ["price", "name"] } }, admin);
    const updated = await eventuallyItem(token, product.id, (i) => i.productPrice?.amountMinor === 1499n, "new price on the wishlist");
    expect(updated).toMatchObject({ productName: "Lamp, now cheaper", productImageUrl: product.imageUrl, inStock: true, productAvailable: true });
    expect(updated.updatedAt!.seconds * 1000n + BigInt(Math.floor(updated.updatedAt!.nanos / 1e6))).toBeGreaterThanOrEqual(
      added.updatedAt!.seconds * 1000n + BigInt(Math.floor(added.updatedAt!.nanos / 1e6)),
    );
  });

  it("follows product.out_of_stock and product.back_in_stock, and marks the item unavailable on product.archived", async () => {
    const { token } = await customer();
    const product = await productOnSale(2);
    await users.addToWishlist({ productId: product.id, notes: "for the hall" }, auth(token));

    await adjustStock(product.id, -2);
    await eventuallyItem(token, product.id, (i) => !i.inStock, "out of stock on the wishlist");
    await adjustStock(product.id, 5);
    await eventuallyItem(token, product.id, (i) => i.inStock, "back in stock on the wishlist");

    await products.archiveProduct({ id: product.id }, admin);
    const archived = await eventuallyItem(token, product.id, (i) => !i.productAvailable, "unavailable after archiving");
    // The item stays on the list with its notes and last snapshot.
    expect(archived).toMatchObject({ productName: product.name, notes: "for the hall", productPrice: { amountMinor: 1999n } });
    expect((await users.listWishlist({}, auth(token))).totalSize).toBe(1);
  });

  it("answers NOT_FOUND PRODUCT_NOT_FOUND for an unknown, draft or archived product, even to an admin", async () => {
    const { userId, token } = await customer();
    const notFound = { code: Code.NotFound, reason: "PRODUCT_NOT_FOUND" };
    expect(await failure(users.addToWishlist({ productId: uuidv7() }, auth(token)))).toMatchObject(notFound);

    const { product: draft } = await products.createProduct({ sku: `D-${randomBytes(5).toString("hex")}`, name: "Draft lamp", price: usd(500n), status: ProductStatus.DRAFT }, admin);
    expect(await failure(users.addToWishlist({ productId: draft!.id }, auth(token)))).toMatchObject(notFound);
    // An admin's own wishlist: the catalog shows them the draft, the wishlist still refuses it.
    const asAdmin = auth(await issuer.user(userId, ["customer", "admin"]));
    expect(await failure(users.addToWishlist({ productId: draft!.id }, asAdmin))).toMatchObject(notFound);

    const archived = await productOnSale(0);
    await products.archiveProduct({ id: archived.id }, admin);
    expect(await failure(users.addToWishlist({ productId: archived.id }, auth(token)))).toMatchObject(notFound);
    expect((await users.listWishlist({}, auth(token))).totalSize).toBe(0);
  });

  it("does not let an older product.updated or product.out_of_stock overwrite a newer snapshot", async () => {
    const { token } = await customer();
    const product = await productOnSale();
    await users.addToWishlist({ productId: product.id }, auth(token));
    await products.updateProduct({ product: { id: product.id, price: usd(2500n) }, updateMask: { paths: ["price"] } }, admin);
    await eventuallyItem(token, product.id, (i) => i.productPrice?.amountMinor === 2500n, "price 25.00 on the wishlist");

    const staleSnapshot = {
      productId: product.id,
      sku: product.sku,
      name: "Stale name",
      price: usd(100n),
      status: ProductStatus.ACTIVE,
      isVisible: true,
      stockStatus: StockStatus.OUT_OF_STOCK,
    };
    const anHourAgo = new Date(Date.now() - 3_600_000);
    const staleUpdate = await publish(ProductUpdatedSchema, { productId: product.id, changedFields: ["price", "name"], product: staleSnapshot }, anHourAgo);
    const staleOut = await publish(
      ProductOutOfStockSchema,
      { productId: product.id, sku: product.sku, productName: product.name, stockStatus: StockStatus.OUT_OF_STOCK, productStockStatus: StockStatus.OUT_OF_STOCK },
      anHourAgo,
    );
    await processed(staleUpdate, "wishlist-product-updated");
    await processed(staleOut, "wishlist-product-out-of-stock");
    expect(await itemOf(token, product.id)).toMatchObject({ productName: product.name, productPrice: { amountMinor: 2500n }, inStock: true });

    // The same facts told as newer do apply: the check above could have failed.
    await publish(ProductUpdatedSchema, { productId: product.id, changedFields: ["price", "name"], product: { ...staleSnapshot, name: "Fresh name" } }, new Date());
    const fresh = await eventuallyItem(token, product.id, (i) => i.productName === "Fresh name", "newer product.updated applied");
    expect(fresh).toMatchObject({ productPrice: { amountMinor: 100n }, inStock: false });
  });

  // Last: stops the Product service.
  it("fails with UNAVAILABLE naming the product service when the catalog cannot be reached", async () => {
    const { token } = await customer();
    const product = await productOnSale(0);
    await mesh.services.product!.stop();
    const error = await failure(users.addToWishlist({ productId: product.id }, auth(token)));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain("product service unavailable");
    expect((await users.listWishlist({}, auth(token))).totalSize).toBe(0);
  });
});
