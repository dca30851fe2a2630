/**
 * Stock and reservations through the public contract, against a real server
 * and PostgreSQL: no overselling under concurrency, idempotency per order,
 * expiry by the sweeper, commit and release, admin adjustments, restocks, the
 * order.cancelled consumer and the stock events.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { jetstream } from "@nats-io/jetstream";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderCancelledSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import { ProductBackInStockSchema, ProductLowStockSchema, ProductOutOfStockSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import { ReservationStatus, StockAdjustmentReason, StockShortageSchema } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { subjectOf } from "../../kit/events/contracts.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { activeProduct, auth, failure, type ProductHarness, productEvents, startProductHarness, unique } from "./testing.ts";

let h: ProductHarness;
const longTtl = { seconds: 600n, nanos: 0 };

beforeAll(async () => {
  // Reservations without a ttl expire after 1 s here; the sweeper runs every 200 ms.
  h = await startProductHarness({ RESERVATION_TTL_SECONDS: "1", RESERVATION_SWEEP_INTERVAL_MS: "200" });
});

afterAll(async () => {
  await h?.stop();
});

const stockOf = async (productId: string, variantId = "") => (await h.inventory.getStock({ productId, variantId }, auth(h.admin))).items[0]!;

describe("reservations", () => {
  it("never oversells: 200 concurrent one-unit reservations of 50 units, exactly 50 succeed", async () => {
    const p = await activeProduct(h, {}, 50);
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () =>
        h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: p.id, quantity: 1 }], ttl: longTtl }, auth(h.service)),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    expect(ok).toHaveLength(50);
    const refused = await Promise.all(results.filter((r) => r.status === "rejected").map((r) => failure(Promise.reject((r as PromiseRejectedResult).reason))));
    expect(refused.every((f) => f.code === Code.FailedPrecondition && f.reason === "OUT_OF_STOCK")).toBe(true);

    const item = await stockOf(p.id);
    expect(item).toMatchObject({ quantityOnHand: 50, reservedQuantity: 50, availableQuantity: 0, stockStatus: StockStatus.OUT_OF_STOCK });
    const [row] = await h.sql<{ quantity: number; reserved_quantity: number; available_quantity: number }>(
      "select quantity, reserved_quantity, available_quantity from product_inventory where product_id = $1",
      [p.id],
    );
    expect(row).toEqual({ quantity: 50, reserved_quantity: 50, available_quantity: 0 });
    const product = (await h.products.getProduct({ lookup: { case: "id", value: p.id } }, {})).product!;
    expect(product.availableQuantity).toBe(0);
  });

  it("reserves once per order, even for concurrent repeats, and refuses other lines for the same order", async () => {
    const p = await activeProduct(h, {}, 10);
    const orderId = uuidv7();
    const request = { orderId, lines: [{ productId: p.id, quantity: 3 }], ttl: longTtl };
    const replies = await Promise.all(Array.from({ length: 5 }, () => h.inventory.reserveStock(request, auth(h.service))));
    expect(new Set(replies.map((r) => r.reservation!.id)).size).toBe(1);
    expect(replies[0]!.reservation).toMatchObject({ orderId, status: ReservationStatus.ACTIVE, lines: [{ productId: p.id, quantity: 3, allocations: [{ location: "default", quantity: 3 }] }] });
    expect(await stockOf(p.id)).toMatchObject({ reservedQuantity: 3, availableQuantity: 7 });
    expect(await failure(h.inventory.reserveStock({ ...request, lines: [{ productId: p.id, quantity: 4 }] }, auth(h.service)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "RESERVATION_CONFLICT",
    });
    // Only services may reserve.
    expect(await failure(h.inventory.reserveStock(request, auth(h.admin)))).toMatchObject({ code: Code.PermissionDenied });
  });

  it("reserves all lines or nothing, naming every short line", async () => {
    const plenty = await activeProduct(h, {}, 10);
    const scarce = await activeProduct(h, {}, 2);
    const err = await failure(
      h.inventory.reserveStock(
        { orderId: uuidv7(), lines: [{ productId: plenty.id, quantity: 5 }, { productId: scarce.id, quantity: 3 }], ttl: longTtl },
        auth(h.service),
      ),
    );
    expect(err).toMatchObject({ code: Code.FailedPrecondition, reason: "OUT_OF_STOCK", field: "lines[1].quantity", metadata: { "lines[1].available": "2" } });
    expect(err.error.findDetails(StockShortageSchema)[0]!.lines).toMatchObject([{ lineIndex: 1, productId: scarce.id, requestedQuantity: 3, availableQuantity: 2 }]);
    expect((await stockOf(plenty.id)).reservedQuantity).toBe(0);

    const draft = (await h.products.createProduct({ sku: unique("D"), name: "draft", price: { amountMinor: 1n, currencyCode: "USD" } }, auth(h.admin))).product!;
    expect(await failure(h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: draft.id, quantity: 1 }] }, auth(h.service)))).toMatchObject({
      reason: "PRODUCT_UNAVAILABLE",
      field: "lines[0]",
    });
    await h.products.createVariant({ productId: plenty.id, sku: unique("V"), price: { amountMinor: 1n, currencyCode: "USD" }, attributes: { size: "S" } }, auth(h.admin));
    expect(await failure(h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: plenty.id, quantity: 1 }] }, auth(h.service)))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "VARIANT_REQUIRED",
    });
  });

  it("commits (sold: on hand and reserved go down) and releases (back to available), idempotently", async () => {
    const p = await activeProduct(h, {}, 10);
    const sold = uuidv7();
    const dropped = uuidv7();
    await h.inventory.reserveStock({ orderId: sold, lines: [{ productId: p.id, quantity: 4 }], ttl: longTtl }, auth(h.service));
    await h.inventory.reserveStock({ orderId: dropped, lines: [{ productId: p.id, quantity: 2 }], ttl: longTtl }, auth(h.service));
    expect(await stockOf(p.id)).toMatchObject({ quantityOnHand: 10, reservedQuantity: 6, availableQuantity: 4 });

    const committed = await h.inventory.commitReservation({ orderId: sold }, auth(h.service));
    expect(committed.reservation!.status).toBe(ReservationStatus.COMMITTED);
    expect((await h.inventory.commitReservation({ orderId: sold }, auth(h.service))).reservation!.status).toBe(ReservationStatus.COMMITTED);
    expect(await stockOf(p.id)).toMatchObject({ quantityOnHand: 6, reservedQuantity: 2, availableQuantity: 4 });

    const released = await h.inventory.releaseReservation({ orderId: dropped, reason: "payment_failed" }, auth(h.service));
    expect(released.reservation).toMatchObject({ status: ReservationStatus.RELEASED, releaseReason: "payment_failed" });
    expect((await h.inventory.releaseReservation({ orderId: dropped }, auth(h.service))).reservation!.status).toBe(ReservationStatus.RELEASED);
    expect(await stockOf(p.id)).toMatchObject({ quantityOnHand: 6, reservedQuantity: 0, availableQuantity: 6 });

    expect(await failure(h.inventory.releaseReservation({ orderId: sold }, auth(h.service)))).toMatchObject({ reason: "RESERVATION_COMMITTED" });
    expect(await failure(h.inventory.commitReservation({ orderId: dropped }, auth(h.service)))).toMatchObject({ reason: "RESERVATION_RELEASED" });
    expect(await failure(h.inventory.reserveStock({ orderId: dropped, lines: [{ productId: p.id, quantity: 2 }] }, auth(h.service)))).toMatchObject({
      reason: "RESERVATION_RELEASED",
    });
    expect(await failure(h.inventory.commitReservation({ orderId: uuidv7() }, auth(h.service)))).toMatchObject({ code: Code.NotFound });
    const listed = await h.inventory.listReservations({ productId: p.id }, auth(h.admin));
    expect(listed.reservations.map((r) => r.orderId)).toEqual([dropped, sold]);
  });

  it("gives expired reservations back through the sweeper; the order may reserve again", async () => {
    const p = await activeProduct(h, {}, 5);
    const orderId = uuidv7();
    await h.inventory.reserveStock({ orderId, lines: [{ productId: p.id, quantity: 5 }] }, auth(h.service));
    expect((await stockOf(p.id)).availableQuantity).toBe(0);
    await eventually(async () => ((await stockOf(p.id)).availableQuantity === 5 ? true : undefined), 5_000, "expired reservation given back");
    const [expired] = (await h.inventory.listReservations({ orderId }, auth(h.admin))).reservations;
    expect(expired).toMatchObject({ status: ReservationStatus.EXPIRED });
    expect(expired!.releasedAt).toBeDefined();
    expect(await failure(h.inventory.commitReservation({ orderId }, auth(h.service)))).toMatchObject({ reason: "RESERVATION_EXPIRED" });
    const again = await h.inventory.reserveStock({ orderId, lines: [{ productId: p.id, quantity: 5 }], ttl: longTtl }, auth(h.service));
    expect(again.reservation!.status).toBe(ReservationStatus.ACTIVE);
    expect(again.reservation!.id).not.toBe(expired!.id);
  });

  it("answers ABORTED (retry) before the deadline when the stock stays locked by another transaction, and keeps serving", async () => {
    const p = await activeProduct(h, {}, 5);
    const holder = new pg.Client({ connectionString: h.mesh.services.product!.ctx.config.databaseUrl });
    await holder.connect();
    try {
      await holder.query("begin");
      await holder.query("select id from product_inventory where product_id = $1 for update", [p.id]);
      const timeoutMs = 2_000;
      const sent = Date.now();
      const refused = await failure(h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: p.id, quantity: 1 }], ttl: longTtl }, { ...auth(h.service), timeoutMs }));
      // PostgreSQL gave up waiting (lock_timeout from the call's deadline): not a cancel at the deadline.
      expect(refused).toMatchObject({ code: Code.Aborted, reason: "CONTENDED" });
      expect(Date.now() - sent).toBeLessThan(timeoutMs);
      await holder.query("rollback");
    } finally {
      await holder.end();
    }
    const reserved = await h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: p.id, quantity: 1 }], ttl: longTtl }, auth(h.service));
    expect(reserved.reservation!.status).toBe(ReservationStatus.ACTIVE);
    expect(await stockOf(p.id)).toMatchObject({ reservedQuantity: 1, availableQuantity: 4 });
  });

  it("answers AdjustStock ABORTED (retry) before the deadline while another transaction holds the stock level, and applies it once free", async () => {
    const p = await activeProduct(h, {}, 5);
    const holder = new pg.Client({ connectionString: h.mesh.services.product!.ctx.config.databaseUrl });
    await holder.connect();
    const adjust = { productId: p.id, change: { case: "delta" as const, value: 3 }, reason: StockAdjustmentReason.RECEIVED, idempotencyKey: unique("adjust") };
    try {
      await holder.query("begin");
      await holder.query("select id from product_inventory where product_id = $1 for update", [p.id]);
      const timeoutMs = 2_000;
      const sent = Date.now();
      const refused = await failure(h.inventory.adjustStock(adjust, { ...auth(h.admin), timeoutMs }));
      // The idempotent transaction's lock waits are bounded by the deadline (kit/idempotency.ts): PostgreSQL gave up.
      expect(refused).toMatchObject({ code: Code.Aborted, reason: "CONTENDED" });
      expect(Date.now() - sent).toBeLessThan(timeoutMs);
      await holder.query("rollback");
    } finally {
      await holder.end();
    }
    // Nothing of the refused call stayed: the same key applies the change now, once.
    const applied = await h.inventory.adjustStock(adjust, auth(h.admin));
    expect(applied.item!.quantityOnHand).toBe(8);
    expect((await h.inventory.adjustStock(adjust, auth(h.admin))).item!.quantityOnHand).toBe(8);
    expect(await stockOf(p.id)).toMatchObject({ quantityOnHand: 8, availableQuantity: 8 });
  });

  it("gives the stock of a cancelled order back on order.cancelled", async () => {
    const p = await activeProduct(h, {}, 8);
    const pending = uuidv7();
    const paid = uuidv7();
    await h.inventory.reserveStock({ orderId: pending, lines: [{ productId: p.id, quantity: 3 }], ttl: longTtl }, auth(h.service));
    await h.inventory.reserveStock({ orderId: paid, lines: [{ productId: p.id, quantity: 2 }], ttl: longTtl }, auth(h.service));
    await h.inventory.commitReservation({ orderId: paid }, auth(h.service));
    expect(await stockOf(p.id)).toMatchObject({ quantityOnHand: 6, availableQuantity: 3 });
    const js = jetstream(h.nc);
    for (const [orderId, stockCommitted] of [
      [pending, false],
      [paid, true],
    ] as const) {
      const eventId = uuidv7();
      const payload = toBinary(OrderCancelledSchema, create(OrderCancelledSchema, { eventId, orderId, reason: "customer_request", stockCommitted }));
      await eventually(() => js.publish(subjectOf(OrderCancelledSchema), payload, { msgID: eventId }).catch(() => undefined), 10_000, "ORDER_EVENTS stream");
      // A redelivery (same event id) changes nothing.
      await js.publish(subjectOf(OrderCancelledSchema), payload, { msgID: uuidv7() });
    }
    await eventually(async () => ((await stockOf(p.id)).availableQuantity === 8 ? true : undefined), 10_000, "stock given back");
    expect(await stockOf(p.id)).toMatchObject({ quantityOnHand: 8, reservedQuantity: 0 });
    const statuses = (await h.inventory.listReservations({ productId: p.id }, auth(h.admin))).reservations.map((r) => r.status);
    expect(statuses.sort()).toEqual([ReservationStatus.COMMITTED, ReservationStatus.RELEASED]);
  });
});

describe("adjustments and stock events", () => {
  it("adjusts on hand idempotently and refuses what the numbers cannot take", async () => {
    const p = await activeProduct(h);
    const key = unique("adjust");
    const request = { idempotencyKey: key, productId: p.id, location: "berlin-1", change: { case: "delta" as const, value: 7 }, reason: StockAdjustmentReason.RECEIVED };
    const first = await h.inventory.adjustStock(request, auth(h.admin));
    const replay = await h.inventory.adjustStock(request, auth(h.admin));
    expect(first.item).toMatchObject({ quantityOnHand: 7, availableQuantity: 7, levels: [{ location: "berlin-1", quantityOnHand: 7 }] });
    expect(first.item!.lastRestockedAt).toBeDefined();
    expect(replay.item!.quantityOnHand).toBe(7);
    expect((await stockOf(p.id)).quantityOnHand).toBe(7);
    expect(await failure(h.inventory.adjustStock({ ...request, change: { case: "delta", value: 1 } }, auth(h.admin)))).toMatchObject({ reason: "IDEMPOTENCY_KEY_REUSED" });
    expect(
      await failure(h.inventory.adjustStock({ ...request, idempotencyKey: unique("adjust"), change: { case: "delta", value: -8 }, reason: StockAdjustmentReason.DAMAGED }, auth(h.admin))),
    ).toMatchObject({ code: Code.FailedPrecondition, reason: "NEGATIVE_STOCK" });
    await h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: p.id, quantity: 5 }], ttl: longTtl }, auth(h.service));
    expect(
      await failure(
        h.inventory.adjustStock({ ...request, idempotencyKey: unique("adjust"), change: { case: "setQuantity", value: 4 }, reason: StockAdjustmentReason.STOCKTAKE }, auth(h.admin)),
      ),
    ).toMatchObject({ reason: "QUANTITY_BELOW_RESERVED", metadata: { reserved: "5" } });
    expect(await failure(h.inventory.adjustStock(request, auth(h.customer)))).toMatchObject({ code: Code.PermissionDenied });
  });

  it("publishes product.low_stock once per crossing, product.out_of_stock at zero and product.back_in_stock after", async () => {
    const p = await activeProduct(h, {}, 10);
    await h.inventory.setLowStockThreshold({ productId: p.id, lowStockThreshold: 3 }, auth(h.admin));
    const reserve = (quantity: number) =>
      h.inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: p.id, quantity }], ttl: longTtl }, auth(h.service));
    await reserve(6); // 4 left
    await reserve(1); // 3 left: low
    await reserve(1); // 2 left: still low, no second event
    const last = uuidv7();
    await h.inventory.reserveStock({ orderId: last, lines: [{ productId: p.id, quantity: 2 }], ttl: longTtl }, auth(h.service)); // 0: out of stock
    expect((await stockOf(p.id)).lowStock).toBe(true);
    await h.inventory.releaseReservation({ orderId: last }, auth(h.service)); // 2: back in stock

    const mine = <T extends { productId: string }>(list: T[]) => list.filter((e) => e.productId === p.id);
    // The first stocking (0 -> 10) was a "back in stock" too.
    const back = await eventually(async () => {
      const list = mine(await productEvents(h, ProductBackInStockSchema));
      return list.length > 1 ? list : undefined;
    });
    const low = mine(await productEvents(h, ProductLowStockSchema));
    const out = mine(await productEvents(h, ProductOutOfStockSchema));
    expect(low).toHaveLength(1);
    expect(low[0]).toMatchObject({ availableQuantity: 3, lowStockThreshold: 3, sku: p.sku });
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ availableQuantity: 0, stockStatus: StockStatus.OUT_OF_STOCK, productStockStatus: StockStatus.OUT_OF_STOCK, slug: p.slug });
    expect(back.map((e) => e.availableQuantity)).toEqual([10, 2]);
    expect(back[1]).toMatchObject({ isPurchasable: true, price: { amountMinor: 1999n } });
  });

  it("restocks returned items once per return and skips what no longer exists", async () => {
    const p = await activeProduct(h, {}, 1);
    const returnId = uuidv7();
    const request = { returnId, lines: [{ productId: p.id, quantity: 2 }, { productId: uuidv7(), quantity: 1 }] };
    const first = await h.inventory.restockItems(request, auth(h.returnsService));
    expect(first).toMatchObject({ alreadyApplied: false, skippedLineIndexes: [1], items: [{ productId: p.id, quantityOnHand: 3 }] });
    const again = await h.inventory.restockItems(request, auth(h.returnsService));
    expect(again).toMatchObject({ alreadyApplied: true, items: [{ quantityOnHand: 3 }] });
    expect(await failure(h.inventory.restockItems({ returnId, lines: [{ productId: p.id, quantity: 1 }] }, auth(h.returnsService)))).toMatchObject({
      reason: "RESTOCK_CONFLICT",
    });
  });
});

describe("callers of the INTERNAL inventory RPCs", () => {
  it("lets only the services the contract names call them", async () => {
    const p = await activeProduct(h, {}, 5);
    const request = { orderId: uuidv7(), lines: [{ productId: p.id, quantity: 1 }], ttl: longTtl };
    // A cart credential is a valid service credential, but Cart may not reserve stock.
    const cart = await failure(h.inventory.reserveStock(request, auth(await h.issuer.service("cart"))));
    expect(cart).toMatchObject({ code: Code.PermissionDenied, reason: "CALLER_NOT_ALLOWED" });
    expect(cart.message).toMatch(/the cart service may not call ecommerce\.product\.v1\.InventoryService\/ReserveStock; allowed callers: order/);
    expect(await failure(h.inventory.reserveStock(request, auth(h.returnsService)))).toMatchObject({ reason: "CALLER_NOT_ALLOWED" });
    expect((await stockOf(p.id)).reservedQuantity).toBe(0);
    await expect(h.inventory.reserveStock(request, auth(h.service))).resolves.toMatchObject({ reservation: { status: ReservationStatus.ACTIVE } });
    expect(await failure(h.inventory.restockItems({ returnId: uuidv7(), lines: [{ productId: p.id, quantity: 1 }] }, auth(h.service)))).toMatchObject({
      reason: "CALLER_NOT_ALLOWED",
    });
  });
});
