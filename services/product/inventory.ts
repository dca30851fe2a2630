/**
 * Stock levels: one product_inventory row per sellable item (a product
 * without variants, or a variant) and location. On hand and reserved are kept
 * within 0 <= reserved <= on hand by CHECK constraints; available is a
 * generated column. Admins read items (GetStock, ListStockItems), adjust on
 * hand with a reason (AdjustStock, idempotent per key) and set low-stock
 * thresholds; Returns puts goods back (RestockItems, idempotent per return).
 * Every change refreshes the items' derived state and publishes the stock
 * crossings in the same transaction (stock-state.ts).
 */
import { create } from "@bufbuild/protobuf";
import {
  type AdjustStockRequest,
  AdjustStockRequestSchema,
  type AdjustStockResponse,
  AdjustStockResponseSchema,
  type GetStockRequest,
  type GetStockResponse,
  type ListStockItemsRequest,
  type ListStockItemsResponse,
  type RestockItemsRequest,
  RestockItemsRequestSchema,
  type RestockItemsResponse,
  type SetLowStockThresholdRequest,
  type SetLowStockThresholdResponse,
  type StockItem,
  StockItemSchema,
  StockLevelSchema,
  StockAdjustmentReason,
} from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, notFound } from "../../kit/errors.ts";
import { idempotent, requestHash } from "../../kit/idempotency.ts";
import { pageOf } from "../../kit/paging.ts";
import { v7 as uuidv7 } from "uuid";
import { productRow } from "./catalog.ts";
import { adjustmentReasons, stockStatuses } from "./mapping.ts";
import { Params, type Sql, sqlOf } from "../../kit/sql.ts";
import { StockAdjustmentEntity, StockRestockEntity } from "./entities.ts";
import { type ItemKey, itemKey, refreshStock, uniqueItems } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

export const defaultLocation = "default";

interface StockItemDbRow {
  product_id: string;
  variant_id: string | null;
  sku: string;
  product_name: string;
  variant_name: string;
  available_quantity: number;
  stock_status: string;
  low_stock_threshold: number;
  low_stock: boolean;
  updated_at: Date;
}

export interface LevelDbRow {
  id: string;
  product_id: string;
  variant_id: string | null;
  location: string;
  quantity: number;
  reserved_quantity: number;
  last_restocked_at: Date | null;
  updated_at: Date;
}

const latest = (values: (Date | null)[]) => values.filter((v): v is Date => v !== null).reduce<Date | null>((a, b) => (a === null || b > a ? b : a), null);

/** StockItem messages of rows of the stock_items view, with their levels and backordered units. */
async function stockItemMessages(db: Sql, rows: StockItemDbRow[]): Promise<StockItem[]> {
  if (rows.length === 0) return [];
  const productIds = [...new Set(rows.map((r) => r.product_id))];
  const levels = await db.all<LevelDbRow>(
    "select id, product_id, variant_id, location, quantity, reserved_quantity, last_restocked_at, updated_at from product_inventory where product_id = any($1::uuid[]) order by location",
    [productIds],
  );
  const backordered = await db.all<{ product_id: string; variant_id: string | null; n: number }>(
    `select l.product_id, l.variant_id, sum(l.backordered_quantity)::int as n
       from stock_reservation_lines l join stock_reservations r on r.id = l.reservation_id
      where r.status = 'active' and l.backordered_quantity > 0 and l.product_id = any($1::uuid[])
      group by l.product_id, l.variant_id`,
    [productIds],
  );
  const key = (r: { product_id: string; variant_id: string | null }) => itemKey({ productId: r.product_id, variantId: r.variant_id });
  const backorderedBy = new Map(backordered.map((b) => [key(b), b.n]));
  return rows.map((r) => {
    const own = levels.filter((l) => key(l) === key(r));
    const onHand = own.reduce((s, l) => s + l.quantity, 0);
    const reserved = own.reduce((s, l) => s + l.reserved_quantity, 0) + (backorderedBy.get(key(r)) ?? 0);
    return create(StockItemSchema, {
      productId: r.product_id,
      variantId: r.variant_id ?? "",
      sku: r.sku,
      productName: r.product_name,
      variantName: r.variant_name,
      quantityOnHand: onHand,
      reservedQuantity: reserved,
      availableQuantity: r.available_quantity,
      lowStockThreshold: r.low_stock_threshold,
      lowStock: r.low_stock,
      stockStatus: stockStatuses.fromDb(r.stock_status),
      levels: own.map((l) =>
        create(StockLevelSchema, {
          location: l.location,
          quantityOnHand: l.quantity,
          reservedQuantity: l.reserved_quantity,
          availableQuantity: Math.max(0, l.quantity - l.reserved_quantity),
          lastRestockedAt: timestampOf(l.last_restocked_at),
          updatedAt: timestampOf(l.updated_at),
        }),
      ),
      lastRestockedAt: timestampOf(latest(own.map((l) => l.last_restocked_at))),
      updatedAt: timestampOf(latest([r.updated_at, ...own.map((l) => l.updated_at)])),
    });
  });
}

/** StockItem messages of the given items, in the given order (items that no longer exist are left out). */
export async function stockItems(db: Sql, items: readonly ItemKey[]): Promise<StockItem[]> {
  if (items.length === 0) return [];
  const variantIds = items.map((i) => i.variantId).filter((v): v is string => v !== null);
  const productIds = items.filter((i) => i.variantId === null).map((i) => i.productId);
  const rows = await db.all<StockItemDbRow>(
    "select * from stock_items where variant_id = any($1::uuid[]) or (variant_id is null and product_id = any($2::uuid[]))",
    [variantIds, productIds],
  );
  const byKey = new Map(rows.map((r) => [itemKey({ productId: r.product_id, variantId: r.variant_id }), r]));
  return stockItemMessages(
    db,
    items.map((i) => byKey.get(itemKey(i))).filter((r): r is StockItemDbRow => r !== undefined),
  );
}

/**
 * The item a request names: the product when it has no variants, else the
 * variant, which is then required (VARIANT_REQUIRED) and must be the product's.
 */
export async function resolveItem(db: Sql, productId: string, variantId: string, field = "variant_id"): Promise<ItemKey> {
  const product = await productRow(db, productId);
  if (!product) throw notFound("product", productId);
  if (variantId) {
    const variant = await db.one<{ id: string }>("select id from product_variants where id = $1 and product_id = $2", [variantId, productId]);
    if (!variant) throw notFound("variant", variantId);
    return { productId, variantId };
  }
  if (product.variant_count > 0) {
    throw domainError(Code.InvalidArgument, `${field}: the product has variants; name one`, { reason: "VARIANT_REQUIRED", field });
  }
  return { productId, variantId: null };
}

export async function getStock(db: Sql, req: GetStockRequest): Promise<Out<GetStockResponse>> {
  const product = await productRow(db, req.productId);
  if (!product) throw notFound("product", req.productId);
  let items: ItemKey[];
  if (req.variantId) {
    items = [await resolveItem(db, req.productId, req.variantId)];
  } else if (product.variant_count === 0) {
    items = [{ productId: product.id, variantId: null }];
  } else {
    const variants = await db.all<{ id: string }>("select id from product_variants where product_id = $1 order by created_at, id", [product.id]);
    items = variants.map((v) => ({ productId: product.id, variantId: v.id }));
  }
  return { items: await stockItems(db, items) };
}

export async function listStockItems(db: Sql, req: ListStockItemsRequest): Promise<Out<ListStockItemsResponse>> {
  const where: string[] = [];
  const p = new Params();
  if (req.productId) where.push(`s.product_id = ${p.add(req.productId)}`);
  if (req.location) {
    where.push(
      `exists (select 1 from product_inventory i where i.location = ${p.add(req.location)} and i.product_id = s.product_id and i.variant_id is not distinct from s.variant_id)`,
    );
  }
  if (req.lowStockOnly) where.push("s.low_stock");
  if (req.stockStatus !== StockStatus.UNSPECIFIED) where.push(`s.stock_status = ${p.add(stockStatuses.toDb(req.stockStatus))}`);
  const pages = pageOf(req, { a: "int", s: "text" });
  const { after: cursor, size } = pages;
  if (cursor) where.push(`(s.available_quantity, s.sku) > (${p.add(cursor.a)}::int, ${p.add(cursor.s)}::text)`);
  const rows = await db.all<StockItemDbRow>(
    `select * from stock_items s ${where.length > 0 ? `where ${where.join(" and ")}` : ""} order by s.available_quantity, s.sku limit ${p.add(size + 1)}`,
    p.values,
  );
  const page = rows.slice(0, size);
  const last = page.at(-1);
  return {
    items: await stockItemMessages(db, page),
    nextPageToken: rows.length > size && last ? pages.next({ a: last.available_quantity, s: last.sku }) : "",
  };
}

/** The inventory row of an item at a location, created on first use, locked. */
async function lockedLevel(db: Sql, item: ItemKey, location: string): Promise<LevelDbRow> {
  await db.run(
    `insert into product_inventory (id, product_id, variant_id, location) values ($1, $2, $3, $4)
     on conflict on constraint product_inventory_item_location_unique do nothing`,
    [uuidv7(), item.productId, item.variantId, location],
  );
  return (await db.one<LevelDbRow>(
    `select * from product_inventory i where i.product_id = $1 and i.variant_id is not distinct from $2::uuid and i.location = $3 for update`,
    [item.productId, item.variantId, location],
  ))!;
}

export async function adjustStock(em: EntityManager, actor: string, req: AdjustStockRequest): Promise<AdjustStockResponse> {
  return idempotent(
    em,
    // The item's stock level is locked by reservations and other adjustments: a wait past the deadline answers CONTENDED.
    { scope: "AdjustStock", key: req.idempotencyKey, requestSchema: AdjustStockRequestSchema, request: req, responseSchema: AdjustStockResponseSchema, boundLockWaits: true },
    async (tx) => {
      const db = sqlOf(tx);
      const item = await resolveItem(db, req.productId, req.variantId);
      const location = req.location || defaultLocation;
      const level = await lockedLevel(db, item, location);
      const after = req.change.case === "delta" ? level.quantity + req.change.value : (req.change.value ?? 0);
      if (after < 0) {
        throw failedPrecondition(`on hand at ${location} would fall to ${after}`, "NEGATIVE_STOCK", { quantity_on_hand: String(level.quantity) });
      }
      if (after < level.reserved_quantity) {
        throw failedPrecondition(`on hand at ${location} would fall below the ${level.reserved_quantity} units reserved there`, "QUANTITY_BELOW_RESERVED", {
          reserved: String(level.reserved_quantity),
        });
      }
      const received = req.reason === StockAdjustmentReason.RECEIVED;
      await db.run(
        `update product_inventory set quantity = $1, updated_at = now()${received ? ", last_restocked_at = now()" : ""} where id = $2`,
        [after, level.id],
      );
      tx.create(StockAdjustmentEntity, {
        id: uuidv7(),
        productId: item.productId,
        variantId: item.variantId,
        location,
        quantityBefore: level.quantity,
        quantityAfter: after,
        reason: adjustmentReasons.toDb(req.reason),
        note: req.note,
        actor,
        referenceId: null,
        createdAt: new Date(),
      });
      await refreshStock(db, [item]);
      return create(AdjustStockResponseSchema, { item: (await stockItems(db, [item]))[0] });
    },
  );
}

export async function setLowStockThreshold(em: EntityManager, req: SetLowStockThresholdRequest): Promise<Out<SetLowStockThresholdResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const item = await resolveItem(db, req.productId, req.variantId);
    await lockLevels(db, [item]);
    if (item.variantId) await db.run("update product_variants set low_stock_threshold = $1 where id = $2", [req.lowStockThreshold, item.variantId]);
    else await db.run("update products set low_stock_threshold = $1 where id = $2", [req.lowStockThreshold, item.productId]);
    await refreshStock(db, [item]);
    return { item: (await stockItems(db, [item]))[0] };
  });
}

export async function restockItems(em: EntityManager, actor: string, req: RestockItemsRequest): Promise<Out<RestockItemsResponse>> {
  const hash = requestHash(RestockItemsRequestSchema, req);
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    await db.run("select pg_advisory_xact_lock(hashtext($1))", [`restock:${req.returnId}`]);
    const resolved: (ItemKey | undefined)[] = [];
    for (const line of req.lines) {
      const product = await productRow(db, line.productId);
      let item: ItemKey | undefined;
      if (product && line.variantId) {
        const variant = await db.one("select id from product_variants where id = $1 and product_id = $2", [line.variantId, line.productId]);
        if (variant) item = { productId: line.productId, variantId: line.variantId };
      } else if (product && product.variant_count === 0) {
        item = { productId: line.productId, variantId: null };
      }
      resolved.push(item);
    }
    const items = uniqueItems(resolved.filter((i): i is ItemKey => i !== undefined));
    const done = await db.one<{ request_hash: string; skipped_line_indexes: number[] }>(
      "select request_hash, skipped_line_indexes from stock_restocks where return_id = $1",
      [req.returnId],
    );
    if (done) {
      if (done.request_hash !== hash) {
        throw failedPrecondition("this return was already restocked with other lines", "RESTOCK_CONFLICT");
      }
      return { items: await stockItems(db, items), skippedLineIndexes: done.skipped_line_indexes, alreadyApplied: true };
    }
    const skipped = resolved.flatMap((item, i) => (item ? [] : [i]));
    // Units per item and location; rows locked in id order like every stock change.
    const units = new Map<string, { item: ItemKey; location: string; quantity: number }>();
    for (const [i, line] of req.lines.entries()) {
      const item = resolved[i];
      if (!item) continue;
      const location = line.location || defaultLocation;
      const k = `${itemKey(item)}@${location}`;
      const entry = units.get(k) ?? { item, location, quantity: 0 };
      entry.quantity += line.quantity;
      units.set(k, entry);
    }
    for (const u of units.values()) {
      await db.run(
        `insert into product_inventory (id, product_id, variant_id, location) values ($1, $2, $3, $4)
         on conflict on constraint product_inventory_item_location_unique do nothing`,
        [uuidv7(), u.item.productId, u.item.variantId, u.location],
      );
    }
    const rows = await lockLevels(db, items);
    for (const u of units.values()) {
      const level = rows.find((r) => r.location === u.location && itemKey({ productId: r.product_id, variantId: r.variant_id }) === itemKey(u.item))!;
      await db.run("update product_inventory set quantity = quantity + $1, updated_at = now() where id = $2", [u.quantity, level.id]);
      tx.create(StockAdjustmentEntity, {
        id: uuidv7(),
        productId: u.item.productId,
        variantId: u.item.variantId,
        location: u.location,
        quantityBefore: level.quantity,
        quantityAfter: level.quantity + u.quantity,
        reason: "returned",
        note: req.orderId ? `order ${req.orderId}` : "",
        actor,
        referenceId: req.returnId,
        createdAt: new Date(),
      });
      level.quantity += u.quantity;
    }
    await refreshStock(db, items);
    tx.create(StockRestockEntity, { returnId: req.returnId, orderId: req.orderId || null, requestHash: hash, skippedLineIndexes: skipped, createdAt: new Date() });
    return { items: await stockItems(db, items), skippedLineIndexes: skipped, alreadyApplied: false };
  });
}

/** Every inventory row of the items, locked in id order (the first step of every multi-item stock change). */
export async function lockLevels(db: Sql, items: readonly ItemKey[]): Promise<LevelDbRow[]> {
  if (items.length === 0) return [];
  const variantIds = items.map((i) => i.variantId).filter((v): v is string => v !== null);
  const productIds = items.filter((i) => i.variantId === null).map((i) => i.productId);
  return db.all<LevelDbRow>(
    `select id, product_id, variant_id, location, quantity, reserved_quantity, last_restocked_at, updated_at from product_inventory
      where variant_id = any($1::uuid[]) or (variant_id is null and product_id = any($2::uuid[]))
      order by id for update`,
    [variantIds, productIds],
  );
}

