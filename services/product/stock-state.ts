/**
 * Derived stock state of sellable items, kept in the same transaction as every
 * change of product_inventory: each item's available quantity, stock status
 * and low-stock flag (on products for a product without variants, on
 * product_variants otherwise), the product's totals, and the events of the
 * crossings: product.out_of_stock (available reached 0), product.back_in_stock
 * (above 0 again) and product.low_stock (fell to or below the threshold, once
 * per crossing), queued in the outbox of the same transaction.
 *
 * Lock order, everywhere: inventory rows (by id), then item rows (products
 * without variants by id, then variants by id), then the products of items
 * that are variants (by id). Callers lock inventory rows before calling
 * refreshStock, so concurrent stock changes never deadlock.
 */
import { ProductBackInStockSchema, ProductLowStockSchema, ProductOutOfStockSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import { publishEvent } from "../../kit/events/outbox.ts";
import { stockStatuses } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import type { Sql } from "../../kit/sql.ts";

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

/** One item's derived stock before and after a refresh, as the refresh statements return it. */
interface Refreshed {
  product_id: string;
  variant_id: string | null;
  old_quantity: number;
  old_low: boolean;
  available: number;
  low: boolean;
  threshold: number;
  status: string;
}

interface Crossing {
  item: ItemKey;
  kind: "out" | "back" | "low";
  available: number;
  threshold: number;
  itemStatus: string;
}

/*
 * One statement per kind of item: the available sums over the items' inventory
 * rows, the items' rows locked in id order (their state before, for the
 * crossings), and the update, which returns both.
 */
const refreshProducts = `
  with s as (
    select t.id, coalesce(sum(i.quantity - i.reserved_quantity), 0)::int as available
      from unnest($1::uuid[]) as t(id) left join product_inventory i on i.product_id = t.id and i.variant_id is null
     group by t.id
  ), prev as (
    select p.id, p.stock_quantity, p.low_stock from products p where p.id = any($1::uuid[]) order by p.id for update
  )
  update products p set
    stock_quantity = s.available,
    stock_status = case when s.available > 0 then 'in_stock' when p.allow_backorder then 'backorder' else 'out_of_stock' end,
    low_stock = p.low_stock_threshold > 0 and s.available <= p.low_stock_threshold
    from s join prev on prev.id = s.id
   where p.id = s.id
  returning p.id as product_id, null::uuid as variant_id, prev.stock_quantity as old_quantity, prev.low_stock as old_low,
            p.stock_quantity as available, p.low_stock as low, p.low_stock_threshold as threshold, p.stock_status as status`;

const refreshVariants = `
  with s as (
    select t.id, coalesce(sum(i.quantity - i.reserved_quantity), 0)::int as available
      from unnest($1::uuid[]) as t(id) left join product_inventory i on i.variant_id = t.id
     group by t.id
  ), prev as (
    select v.id, v.stock_quantity, v.low_stock from product_variants v where v.id = any($1::uuid[]) order by v.id for update
  )
  update product_variants v set
    stock_quantity = s.available,
    stock_status = case when s.available > 0 then 'in_stock' when p.allow_backorder then 'backorder' else 'out_of_stock' end,
    low_stock = v.low_stock_threshold > 0 and s.available <= v.low_stock_threshold
    from s join prev on prev.id = s.id, products p
   where v.id = s.id and p.id = v.product_id
  returning v.product_id, v.id as variant_id, prev.stock_quantity as old_quantity, prev.low_stock as old_low,
            v.stock_quantity as available, v.low_stock as low, v.low_stock_threshold as threshold, v.stock_status as status`;

/**
 * Recomputes the items' derived stock from their inventory rows and publishes
 * the crossings, in one statement per kind of item (products without variants,
 * variants) and one for the products of variants. Items of deleted variants
 * are skipped.
 */
export async function refreshStock(db: Sql, items: readonly ItemKey[]): Promise<void> {
  const unique = uniqueItems(items);
  const productIds = unique.filter((i) => i.variantId === null).map((i) => i.productId);
  const variantIds = unique.map((i) => i.variantId).filter((v): v is string => v !== null);
  const refreshed = [
    ...(productIds.length > 0 ? await db.all<Refreshed>(refreshProducts, [productIds]) : []),
    ...(variantIds.length > 0 ? await db.all<Refreshed>(refreshVariants, [variantIds]) : []),
  ];
  const variantProducts = [...new Set(refreshed.filter((r) => r.variant_id !== null).map((r) => r.product_id))].sort();
  if (variantProducts.length > 0) await refreshProductStock(db, variantProducts);
  const crossings: Crossing[] = [];
  for (const r of refreshed) {
    const base = { item: { productId: r.product_id, variantId: r.variant_id }, available: r.available, threshold: r.threshold, itemStatus: r.status };
    if (r.old_quantity > 0 && r.available === 0) crossings.push({ ...base, kind: "out" });
    if (r.old_quantity === 0 && r.available > 0) crossings.push({ ...base, kind: "back" });
    if (!r.old_low && r.low && r.available > 0) crossings.push({ ...base, kind: "low" });
  }
  if (crossings.length > 0) await publishCrossings(db, crossings);
}

/**
 * Products' totals: their own inventory while they have no variants, else the
 * sum of their variants'. Used after stock changes and after structural
 * changes (variants added or deleted, backorders switched), which publish no
 * stock events.
 */
export async function refreshProductStock(db: Sql, productIds: string | readonly string[]): Promise<void> {
  await db.run(
    `update products p set
       stock_quantity = t.available,
       stock_status = case when t.available > 0 or t.any_in_stock then 'in_stock' when p.allow_backorder then 'backorder' else 'out_of_stock' end,
       low_stock = case when p.variant_count = 0 then p.low_stock_threshold > 0 and t.available <= p.low_stock_threshold else false end
     from (
       select p2.id, case when p2.variant_count = 0
                then (select coalesce(sum(i.quantity - i.reserved_quantity), 0) from product_inventory i where i.product_id = p2.id and i.variant_id is null)
                else (select coalesce(sum(v.stock_quantity), 0) from product_variants v where v.product_id = p2.id) end::int as available,
              exists (select 1 from product_variants v where v.product_id = p2.id and v.stock_status = 'in_stock') as any_in_stock
         from products p2 where p2.id = any($1::uuid[])
     ) t
     where p.id = t.id`,
    [typeof productIds === "string" ? [productIds] : productIds],
  );
}

/** Re-derives every variant's stock status after the product's allow_backorder changed. */
export async function refreshVariantStatuses(db: Sql, productId: string): Promise<void> {
  await db.run(
    `update product_variants v set stock_status = case when v.stock_quantity > 0 then 'in_stock' when p.allow_backorder then 'backorder' else 'out_of_stock' end
       from products p where p.id = v.product_id and p.id = $1`,
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

async function publishCrossings(db: Sql, crossings: Crossing[]): Promise<void> {
  const productIds = [...new Set(crossings.map((c) => c.item.productId))];
  const variantIds = crossings.map((c) => c.item.variantId).filter((v): v is string => v !== null);
  const products = new Map(
    (
      await db.all<EventInfo>(
        `select p.id as product_id, p.name, p.slug, p.sku, p.currency, p.price_minor, p.status, p.is_visible, p.stock_status,
                (select i.url from product_images i where i.product_id = p.id and i.is_primary) as primary_image_url
           from products p where p.id = any($1::uuid[])`,
        [productIds],
      )
    ).map((r) => [r.product_id, r]),
  );
  const variants = new Map(
    variantIds.length === 0
      ? []
      : (
          await db.all<{ id: string; sku: string; name: string; price_minor: string; image_url: string | null }>(
            "select id, sku, name, price_minor, image_url from product_variants where id = any($1::uuid[])",
            [variantIds],
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
