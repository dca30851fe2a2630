/**
 * Derived stock state of sellable items, kept in the same transaction as every
 * change of product_inventory: each item's available quantity, stock status
 * and low-stock flag (on products for a product without variants, on
 * product_variants otherwise), the product's totals, and the events of the
 * crossings: product.out_of_stock (available reached 0), product.back_in_stock
 * (above 0 again) and product.low_stock (fell to or below the threshold, once
 * per crossing), queued in the outbox of the same transaction.
 *
 * Lock order, everywhere: inventory rows (by id), then item rows (by product,
 * variant), then the products of items that are variants (by id). Callers lock
 * inventory rows before calling refreshStock, so concurrent stock changes
 * never deadlock.
 */
import { ProductBackInStockSchema, ProductLowStockSchema, ProductOutOfStockSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import { publishEvent } from "../../kit/events/outbox.ts";
import { stockStatuses } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import { pgArray, type LegacySql } from "../../kit/sql.ts";

export interface ItemKey {
  productId: string;
  /** null for a product without variants. */
  variantId: string | null;
}

export const itemKey = (i: ItemKey) => `${i.productId}/${i.variantId ?? ""}`;

export function uniqueItems(items: readonly ItemKey[]): ItemKey[] {
  const byKey = new Map(items.map((i) => [itemKey(i), { productId: i.productId, variantId: i.variantId }]));
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, i]) => i);
}

/** SQL condition (and its parameters) selecting the inventory rows of one item. */
export function inventoryOf(item: ItemKey, alias = "i"): [string, unknown[]] {
  return item.variantId
    ? [`${alias}.variant_id = ?`, [item.variantId]]
    : [`${alias}.product_id = ? and ${alias}.variant_id is null`, [item.productId]];
}

export function statusFor(available: number, allowBackorder: boolean): string {
  return available > 0 ? "in_stock" : allowBackorder ? "backorder" : "out_of_stock";
}

interface ItemState {
  stock_quantity: number;
  low_stock: boolean;
  low_stock_threshold: number;
  allow_backorder: boolean;
}

interface Crossing {
  item: ItemKey;
  kind: "out" | "back" | "low";
  available: number;
  threshold: number;
  itemStatus: string;
}

/**
 * Recomputes the items' derived stock from their inventory rows and publishes
 * the crossings. Items of deleted variants are skipped.
 */
export async function refreshStock(db: LegacySql, items: readonly ItemKey[]): Promise<void> {
  const crossings: Crossing[] = [];
  const variantProducts = new Set<string>();
  for (const item of uniqueItems(items)) {
    const state = item.variantId
      ? await db.one<ItemState>(
          `select v.stock_quantity, v.low_stock, v.low_stock_threshold, p.allow_backorder
             from product_variants v join products p on p.id = v.product_id where v.id = ? for update of v`,
          [item.variantId],
        )
      : await db.one<ItemState>("select stock_quantity, low_stock, low_stock_threshold, allow_backorder from products where id = ? for update", [
          item.productId,
        ]);
    if (!state) continue;
    const [where, params] = inventoryOf(item);
    const sum = await db.one<{ available: number }>(
      `select coalesce(sum(i.quantity - i.reserved_quantity), 0)::int as available from product_inventory i where ${where}`,
      params,
    );
    const available = sum?.available ?? 0;
    const status = statusFor(available, state.allow_backorder);
    const low = state.low_stock_threshold > 0 && available <= state.low_stock_threshold;
    if (item.variantId) {
      variantProducts.add(item.productId);
      await db.run("update product_variants set stock_quantity = ?, stock_status = ?, low_stock = ? where id = ?", [available, status, low, item.variantId]);
    } else {
      await db.run("update products set stock_quantity = ?, stock_status = ?, low_stock = ? where id = ?", [available, status, low, item.productId]);
    }
    const base = { item, available, threshold: state.low_stock_threshold, itemStatus: status };
    if (state.stock_quantity > 0 && available === 0) crossings.push({ ...base, kind: "out" });
    if (state.stock_quantity === 0 && available > 0) crossings.push({ ...base, kind: "back" });
    if (!state.low_stock && low && available > 0) crossings.push({ ...base, kind: "low" });
  }
  for (const productId of [...variantProducts].sort()) await refreshProductStock(db, productId);
  if (crossings.length > 0) await publishCrossings(db, crossings);
}

/**
 * A product's totals: its own inventory while it has no variants, else the sum
 * of its variants'. Used after stock changes and after structural changes
 * (variants added or deleted, backorders switched), which publish no stock events.
 */
export async function refreshProductStock(db: LegacySql, productId: string): Promise<void> {
  await db.run(
    `update products p set
       stock_quantity = t.available,
       stock_status = case when t.available > 0 or t.any_in_stock then 'in_stock' when p.allow_backorder then 'backorder' else 'out_of_stock' end,
       low_stock = case when p.variant_count = 0 then p.low_stock_threshold > 0 and t.available <= p.low_stock_threshold else false end
     from (
       select case when p2.variant_count = 0
                then (select coalesce(sum(i.quantity - i.reserved_quantity), 0) from product_inventory i where i.product_id = p2.id and i.variant_id is null)
                else (select coalesce(sum(v.stock_quantity), 0) from product_variants v where v.product_id = p2.id) end::int as available,
              exists (select 1 from product_variants v where v.product_id = p2.id and v.stock_status = 'in_stock') as any_in_stock
         from products p2 where p2.id = ?
     ) t
     where p.id = ?`,
    [productId, productId],
  );
}

/** Re-derives every variant's stock status after the product's allow_backorder changed. */
export async function refreshVariantStatuses(db: LegacySql, productId: string): Promise<void> {
  await db.run(
    `update product_variants v set stock_status = case when v.stock_quantity > 0 then 'in_stock' when p.allow_backorder then 'backorder' else 'out_of_stock' end
       from products p where p.id = v.product_id and p.id = ?`,
    [productId],
  );
}

interface EventInfo {
  product_id: string;
  name: string;
  slug: string;
  sku: string;
  currency: string;
  price_minor: string;
  status: string;
  is_visible: boolean;
  stock_status: string;
  primary_image_url: string | null;
}

async function publishCrossings(db: LegacySql, crossings: Crossing[]): Promise<void> {
  const productIds = [...new Set(crossings.map((c) => c.item.productId))];
  const variantIds = crossings.map((c) => c.item.variantId).filter((v): v is string => v !== null);
  const products = new Map(
    (
      await db.all<EventInfo>(
        `select p.id as product_id, p.name, p.slug, p.sku, p.currency, p.price_minor, p.status, p.is_visible, p.stock_status,
                (select i.url from product_images i where i.product_id = p.id and i.is_primary) as primary_image_url
           from products p where p.id = any(?::uuid[])`,
        [pgArray(productIds)],
      )
    ).map((r) => [r.product_id, r]),
  );
  const variants = new Map(
    variantIds.length === 0
      ? []
      : (
          await db.all<{ id: string; sku: string; name: string; price_minor: string; image_url: string | null }>(
            "select id, sku, name, price_minor, image_url from product_variants where id = any(?::uuid[])",
            [pgArray(variantIds)],
          )
        ).map((r) => [r.id, r]),
  );
  for (const c of crossings) {
    const p = products.get(c.item.productId);
    if (!p) continue;
    const v = c.item.variantId ? variants.get(c.item.variantId) : undefined;
    const common = {
      productId: p.product_id,
      variantId: c.item.variantId ?? "",
      sku: v?.sku ?? p.sku,
      productName: p.name,
      variantName: v?.name ?? "",
    };
    const imageUrl = v?.image_url || p.primary_image_url || "";
    if (c.kind === "out") {
      publishEvent(db.em, ProductOutOfStockSchema, {
        ...common,
        slug: p.slug,
        imageUrl,
        availableQuantity: 0,
        stockStatus: stockStatuses.fromDb(c.itemStatus),
        productStockStatus: stockStatuses.fromDb(p.stock_status),
      });
    } else if (c.kind === "back") {
      publishEvent(db.em, ProductBackInStockSchema, {
        ...common,
        slug: p.slug,
        imageUrl,
        availableQuantity: c.available,
        price: money(v?.price_minor ?? p.price_minor, p.currency),
        isPurchasable: p.status === "active" && p.is_visible,
      });
    } else {
      publishEvent(db.em, ProductLowStockSchema, { ...common, availableQuantity: c.available, lowStockThreshold: c.threshold });
    }
  }
}
