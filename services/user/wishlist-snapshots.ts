/**
 * The product snapshot on wishlist items: taken from BatchGetProducts when a
 * product is added, then kept current from the catalog's events on
 * PRODUCT_EVENTS (product.updated, product.archived, product.out_of_stock,
 * product.back_in_stock). Each event updates every wishlist row of its
 * product in one statement.
 *
 * Out of order: each subject has its own durable consumer and a failed event
 * is redelivered later, so an older fact can arrive after a newer one. Every
 * row remembers the catalog time of what it holds (snapshot_at for name,
 * image, price and availability; stock_at for the stock flag, since stock
 * events carry only stock) and an event changes only what is older than its
 * occurred_at. product.created is not consumed: a product can only be added
 * once it is on sale, so its creation is always older than the snapshot.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  ProductArchivedSchema,
  ProductBackInStockSchema,
  ProductOutOfStockSchema,
  type ProductSnapshot,
  ProductUpdatedSchema,
} from "../../gen/ecommerce/product/v1/events_pb.js";
import { type Product, ProductStatus, StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { sqlOf } from "../../kit/sql.ts";

/** What a wishlist item shows of its product. */
export interface ProductFacts {
  name: string;
  imageUrl: string | null;
  priceMinor: bigint | null;
  priceCurrency: string | null;
  /** Customers can buy it: ACTIVE and visible. */
  available: boolean;
  /** IN_STOCK only: a backorder is not "in stock". */
  inStock: boolean;
}

const purchasable = (status: ProductStatus, isVisible: boolean) => status === ProductStatus.ACTIVE && isVisible;

/** Facts of a product as BatchGetProducts returns it. */
export function factsOfProduct(product: Product): ProductFacts {
  const image = product.images.find((i) => i.isPrimary) ?? product.images[0];
  return {
    name: product.name,
    imageUrl: image?.url || null,
    priceMinor: product.price ? product.price.amountMinor : null,
    priceCurrency: product.price ? product.price.currencyCode : null,
    available: purchasable(product.status, product.isVisible),
    inStock: product.stockStatus === StockStatus.IN_STOCK,
  };
}

function factsOfSnapshot(snapshot: ProductSnapshot): ProductFacts {
  return {
    name: snapshot.name,
    imageUrl: snapshot.primaryImageUrl || null,
    priceMinor: snapshot.price ? snapshot.price.amountMinor : null,
    priceCurrency: snapshot.price ? snapshot.price.currencyCode : null,
    available: purchasable(snapshot.status, snapshot.isVisible),
    inStock: snapshot.stockStatus === StockStatus.IN_STOCK,
  };
}

function occurredAt(subject: string, eventId: string, t: Timestamp | undefined): Date {
  const at = dateOf(t);
  // Without a time the event cannot be ordered against the snapshot; kept as a dead letter rather than guessed.
  if (!at) throw new Error(`${subject} ${eventId} has no occurred_at; cannot tell whether it is newer than the wishlist snapshots`);
  return at;
}

const catalogNewer = "(w.snapshot_at is null or w.snapshot_at < v.at)";
const stockNewer = "(w.stock_at is null or w.stock_at < v.at)";

/**
 * Applies a full product snapshot (catalog fields and stock) to every wishlist
 * row of the product, each part only where the row's is older. updated_at
 * moves only when something the customer sees changed.
 */
async function applySnapshot(em: EntityManager, productId: string, facts: ProductFacts, at: Date): Promise<void> {
  const catalogChanged = `(w.product_name, w.product_image_url, w.product_price_minor, w.product_price_currency, w.product_available)
    is distinct from (v.name, v.image_url, v.price_minor, v.price_currency, v.available)`;
  await sqlOf(em).run(
    `with v (name, image_url, price_minor, price_currency, available, in_stock, at) as (
       values ($1::text, $2::text, $3::bigint, $4::char(3), $5::boolean, $6::boolean, $7::timestamptz))
     update user_wishlist_items w set
       product_name = case when ${catalogNewer} then v.name else w.product_name end,
       product_image_url = case when ${catalogNewer} then v.image_url else w.product_image_url end,
       product_price_minor = case when ${catalogNewer} then v.price_minor else w.product_price_minor end,
       product_price_currency = case when ${catalogNewer} then v.price_currency else w.product_price_currency end,
       product_available = case when ${catalogNewer} then v.available else w.product_available end,
       in_stock = case when ${stockNewer} then v.in_stock else w.in_stock end,
       updated_at = case when (${catalogNewer} and ${catalogChanged}) or (${stockNewer} and w.in_stock is distinct from v.in_stock)
         then now() else w.updated_at end,
       snapshot_at = greatest(w.snapshot_at, v.at),
       stock_at = greatest(w.stock_at, v.at)
     from v
     where w.product_id = $8 and (${catalogNewer} or ${stockNewer})`,
    [facts.name, facts.imageUrl, facts.priceMinor?.toString() ?? null, facts.priceCurrency, facts.available, facts.inStock, at, productId],
  );
}

/** Sets the stock flag on every wishlist row of the product whose stock fact is older. */
async function applyStock(em: EntityManager, productId: string, inStock: boolean, at: Date): Promise<void> {
  await sqlOf(em).run(
    `update user_wishlist_items set
       updated_at = case when in_stock is distinct from $1 then now() else updated_at end,
       in_stock = $1,
       stock_at = $2
     where product_id = $3 and (stock_at is null or stock_at < $2)`,
    [inStock, at, productId],
  );
}

export function wishlistSnapshotConsumers(): EventHandler[] {
  return [
    onEvent(ProductUpdatedSchema, "wishlist-product-updated", async (em, event) => {
      if (!event.product) throw new Error(`product.updated ${event.eventId} carries no product snapshot`);
      await applySnapshot(em, event.productId, factsOfSnapshot(event.product), occurredAt("product.updated", event.eventId, event.occurredAt));
    }),

    // The snapshot says ARCHIVED, so the items become unavailable; they stay on the lists.
    onEvent(ProductArchivedSchema, "wishlist-product-archived", async (em, event) => {
      if (!event.product) throw new Error(`product.archived ${event.eventId} carries no product snapshot`);
      const facts = { ...factsOfSnapshot(event.product), available: false };
      await applySnapshot(em, event.productId, facts, occurredAt("product.archived", event.eventId, event.occurredAt));
    }),

    // Published per sellable item: for a variant, the product as a whole may still be in stock.
    onEvent(ProductOutOfStockSchema, "wishlist-product-out-of-stock", (em, event) =>
      applyStock(em, event.productId, event.productStockStatus === StockStatus.IN_STOCK, occurredAt("product.out_of_stock", event.eventId, event.occurredAt)),
    ),

    // An item with units available makes the product as a whole in stock.
    onEvent(ProductBackInStockSchema, "wishlist-product-back-in-stock", (em, event) =>
      applyStock(em, event.productId, true, occurredAt("product.back_in_stock", event.eventId, event.occurredAt)),
    ),
  ];
}
