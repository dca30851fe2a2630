/**
 * Reading products: the row shape, loading products with their categories,
 * tags, images and variants in one statement (the relations as JSON arrays, so
 * GetProduct is one round trip and nothing is hydrated), and turning them into
 * the contract's Product, ProductSummary and the events' ProductSnapshot. The
 * cost price is only ever filled for admins.
 */
import { create } from "@bufbuild/protobuf";
import { type ProductSnapshot, ProductSnapshotSchema, VariantSnapshotSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import {
  DimensionsSchema,
  type Product,
  type ProductImage,
  ProductImageSchema,
  ProductSchema,
  type ProductSummary,
  ProductSummarySchema,
  type ProductVariant,
  ProductVariantSchema,
  type RatingSummary,
  RatingSummarySchema,
} from "../../gen/ecommerce/product/v1/product_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { customerVisible, productStatuses, stockStatuses, type Viewer } from "./mapping.ts";
import { money, moneyOrUndefined } from "../../kit/money.ts";
import type { Sql } from "../../kit/sql.ts";

export interface ProductDbRow {
  id: string;
  sku: string;
  name: string;
  slug: string;
  description: string;
  short_description: string;
  currency: string;
  price_minor: string;
  compare_at_price_minor: string | null;
  cost_price_minor: string | null;
  status: string;
  is_visible: boolean;
  allow_backorder: boolean;
  stock_quantity: number;
  stock_status: string;
  low_stock_threshold: number;
  low_stock: boolean;
  weight_grams: number;
  length_mm: number | null;
  width_mm: number | null;
  height_mm: number | null;
  meta_title: string;
  meta_description: string;
  attributes: Record<string, string>;
  min_price_minor: string;
  max_price_minor: string;
  variant_count: number;
  rating_count: number;
  rating_1_count: number;
  rating_2_count: number;
  rating_3_count: number;
  rating_4_count: number;
  rating_5_count: number;
  rating_average_hundredths: number;
  created_at: Date;
  updated_at: Date;
  published_at: Date | null;
}

/** Every column of products but the search document, for tables aliased `p`. */
export const productColumns = `p.id, p.sku, p.name, p.slug, p.description, p.short_description, p.currency, p.price_minor,
  p.compare_at_price_minor, p.cost_price_minor, p.status, p.is_visible, p.allow_backorder, p.stock_quantity, p.stock_status,
  p.low_stock_threshold, p.low_stock, p.weight_grams, p.length_mm, p.width_mm, p.height_mm, p.meta_title, p.meta_description,
  p.attributes, p.min_price_minor, p.max_price_minor, p.variant_count, p.rating_count, p.rating_1_count, p.rating_2_count,
  p.rating_3_count, p.rating_4_count, p.rating_5_count, p.rating_average_hundredths, p.created_at, p.updated_at, p.published_at`;

export interface VariantDbRow {
  id: string;
  product_id: string;
  sku: string;
  name: string;
  price_minor: string;
  compare_at_price_minor: string | null;
  attributes: Record<string, string>;
  image_url: string | null;
  stock_quantity: number;
  stock_status: string;
  low_stock_threshold: number;
  low_stock: boolean;
  /** Date from a column, ISO text from the JSON of relationColumns. */
  created_at: Date | string;
  updated_at: Date | string;
}

export const variantColumns = `v.id, v.product_id, v.sku, v.name, v.price_minor, v.compare_at_price_minor, v.attributes, v.image_url,
  v.stock_quantity, v.stock_status, v.low_stock_threshold, v.low_stock, v.created_at, v.updated_at`;

export interface ImageDbRow {
  id: string;
  product_id: string;
  url: string;
  alt_text: string;
  sort_order: number;
  is_primary: boolean;
  created_at: Date | string;
}

export const imageOrder = "sort_order, created_at, id";

/** A product row with its relations, as `fullProductRows` selects them. */
export interface FullProductDbRow extends ProductDbRow {
  category_ids: string[];
  tags: string[];
  images: ImageDbRow[];
  variants: VariantDbRow[];
}

/**
 * The relations of products aliased `p`, as JSON arrays in their display order
 * (bigints as text, so no precision is lost on the way).
 */
export const relationColumns = `
  coalesce((select json_agg(pc.category_id order by pc.position, pc.created_at) from product_categories pc where pc.product_id = p.id), '[]') as category_ids,
  coalesce((select json_agg(t.tag order by t.tag) from product_tags t where t.product_id = p.id), '[]') as tags,
  coalesce((select json_agg(json_build_object('id', i.id, 'product_id', i.product_id, 'url', i.url, 'alt_text', i.alt_text, 'sort_order', i.sort_order,
                                              'is_primary', i.is_primary, 'created_at', i.created_at) order by i.sort_order, i.created_at, i.id)
              from product_images i where i.product_id = p.id), '[]') as images,
  coalesce((select json_agg(json_build_object('id', v.id, 'product_id', v.product_id, 'sku', v.sku, 'name', v.name, 'price_minor', v.price_minor::text,
                                              'compare_at_price_minor', v.compare_at_price_minor::text, 'attributes', v.attributes, 'image_url', v.image_url,
                                              'stock_quantity', v.stock_quantity, 'stock_status', v.stock_status, 'low_stock_threshold', v.low_stock_threshold,
                                              'low_stock', v.low_stock, 'created_at', v.created_at, 'updated_at', v.updated_at) order by v.created_at, v.id)
              from product_variants v where v.product_id = p.id), '[]') as variants`;

/** Product rows by id (any status); `lock` takes the rows' write locks in id order. */
export async function productRows(db: Sql, ids: readonly string[], lock = false): Promise<Map<string, ProductDbRow>> {
  if (ids.length === 0) return new Map();
  const rows = await db.all<ProductDbRow>(`select ${productColumns} from products p where p.id = any($1::uuid[]) order by p.id${lock ? " for update" : ""}`, [ids]);
  return new Map(rows.map((r) => [r.id, r]));
}

export async function productRow(db: Sql, id: string, lock = false): Promise<ProductDbRow | undefined> {
  return (await productRows(db, [id], lock)).get(id);
}

export function ratingOf(row: ProductDbRow): RatingSummary {
  return create(RatingSummarySchema, {
    averageRatingHundredths: row.rating_average_hundredths,
    reviewCount: row.rating_count,
    oneStarCount: row.rating_1_count,
    twoStarCount: row.rating_2_count,
    threeStarCount: row.rating_3_count,
    fourStarCount: row.rating_4_count,
    fiveStarCount: row.rating_5_count,
  });
}

export function imageMessage(r: ImageDbRow): ProductImage {
  return create(ProductImageSchema, {
    id: r.id,
    productId: r.product_id,
    url: r.url,
    altText: r.alt_text,
    sortOrder: r.sort_order,
    isPrimary: r.is_primary,
    createdAt: timestampOf(r.created_at),
  });
}

export function variantMessage(v: VariantDbRow, currency: string): ProductVariant {
  return create(ProductVariantSchema, {
    id: v.id,
    productId: v.product_id,
    sku: v.sku,
    name: v.name,
    price: money(v.price_minor, currency),
    compareAtPrice: moneyOrUndefined(v.compare_at_price_minor, currency),
    attributes: v.attributes,
    imageUrl: v.image_url ?? "",
    stockStatus: stockStatuses.fromDb(v.stock_status),
    availableQuantity: v.stock_quantity,
    createdAt: timestampOf(v.created_at),
    updatedAt: timestampOf(v.updated_at),
  });
}

export function productMessage(row: FullProductDbRow, viewer: Viewer): Product {
  const hasDimensions = row.length_mm !== null || row.width_mm !== null || row.height_mm !== null;
  return create(ProductSchema, {
    id: row.id,
    sku: row.sku,
    name: row.name,
    slug: row.slug,
    description: row.description,
    shortDescription: row.short_description,
    price: money(row.price_minor, row.currency),
    compareAtPrice: moneyOrUndefined(row.compare_at_price_minor, row.currency),
    costPrice: viewer.admin ? moneyOrUndefined(row.cost_price_minor, row.currency) : undefined,
    status: productStatuses.fromDb(row.status),
    isVisible: row.is_visible,
    stockStatus: stockStatuses.fromDb(row.stock_status),
    availableQuantity: row.stock_quantity,
    allowBackorder: row.allow_backorder,
    weightGrams: row.weight_grams,
    dimensions: hasDimensions
      ? create(DimensionsSchema, { lengthMm: row.length_mm ?? 0, widthMm: row.width_mm ?? 0, heightMm: row.height_mm ?? 0 })
      : undefined,
    metaTitle: row.meta_title,
    metaDescription: row.meta_description,
    attributes: row.attributes,
    tags: row.tags,
    categoryIds: row.category_ids,
    images: row.images.map(imageMessage),
    variants: row.variants.map((v) => variantMessage(v, row.currency)),
    rating: ratingOf(row),
    createdAt: timestampOf(row.created_at),
    updatedAt: timestampOf(row.updated_at),
    publishedAt: timestampOf(row.published_at),
  });
}

/**
 * Full products matching `where` (over products aliased `p`, with its
 * parameters), in one statement; non-admins only get ACTIVE, visible ones.
 */
export async function fullProductRows(db: Sql, where: string, params: readonly unknown[], viewer: Viewer): Promise<FullProductDbRow[]> {
  return db.all<FullProductDbRow>(
    `select ${productColumns}, ${relationColumns} from products p where (${where})${viewer.admin ? "" : ` and ${customerVisible}`}`,
    params,
  );
}

/** Full products by id, for the viewer (non-admins only get ACTIVE, visible ones). */
export async function loadProducts(db: Sql, ids: readonly string[], viewer: Viewer): Promise<Map<string, Product>> {
  if (ids.length === 0) return new Map();
  const rows = await fullProductRows(db, "p.id = any($1::uuid[])", [ids], viewer);
  return new Map(rows.map((r) => [r.id, productMessage(r, viewer)]));
}

export async function loadProduct(db: Sql, id: string, viewer: Viewer): Promise<Product | undefined> {
  return (await loadProducts(db, [id], viewer)).get(id);
}

/** The product columns a ProductSummary is made of (summaryMessage), and its primary image's and category's. */
export interface SummaryDbRow
  extends Pick<
    ProductDbRow,
    | "id" | "sku" | "name" | "slug" | "short_description" | "currency" | "price_minor" | "compare_at_price_minor" | "min_price_minor" | "max_price_minor"
    | "stock_status" | "rating_average_hundredths" | "rating_count" | "variant_count" | "status" | "is_visible" | "published_at"
  > {
  primary_image_url: string | null;
  primary_image_alt_text: string | null;
  primary_category_id: string | null;
}

/**
 * Columns for ProductSummary (tables aliased `p`): only what summaryMessage reads. A search page
 * is 20 of them: the description, attributes and SEO texts would be read, sent and parsed for nothing.
 */
export const summaryColumns = `p.id, p.sku, p.name, p.slug, p.short_description, p.currency, p.price_minor, p.compare_at_price_minor,
  p.min_price_minor, p.max_price_minor, p.stock_status, p.rating_average_hundredths, p.rating_count, p.variant_count, p.status,
  p.is_visible, p.published_at,
  (select i.url from product_images i where i.product_id = p.id and i.is_primary) as primary_image_url,
  (select i.alt_text from product_images i where i.product_id = p.id and i.is_primary) as primary_image_alt_text,
  (select pc.category_id from product_categories pc where pc.product_id = p.id order by pc.position, pc.created_at limit 1) as primary_category_id`;

export function summaryMessage(r: SummaryDbRow): ProductSummary {
  return create(ProductSummarySchema, {
    id: r.id,
    sku: r.sku,
    name: r.name,
    slug: r.slug,
    shortDescription: r.short_description,
    price: money(r.price_minor, r.currency),
    compareAtPrice: moneyOrUndefined(r.compare_at_price_minor, r.currency),
    minPrice: money(r.min_price_minor, r.currency),
    maxPrice: money(r.max_price_minor, r.currency),
    primaryImageUrl: r.primary_image_url ?? "",
    primaryImageAltText: r.primary_image_alt_text ?? "",
    stockStatus: stockStatuses.fromDb(r.stock_status),
    averageRatingHundredths: r.rating_average_hundredths,
    reviewCount: r.rating_count,
    variantCount: r.variant_count,
    status: productStatuses.fromDb(r.status),
    isVisible: r.is_visible,
    primaryCategoryId: r.primary_category_id ?? "",
    publishedAt: timestampOf(r.published_at),
  });
}

/** The product as events carry it (never the cost price), read inside the change's transaction. */
export async function productSnapshot(db: Sql, productId: string): Promise<ProductSnapshot> {
  const [row] = await fullProductRows(db, "p.id = $1", [productId], { admin: true });
  if (!row) throw new Error(`product ${productId} vanished inside its own transaction`);
  const primary = row.images.find((i) => i.is_primary);
  return create(ProductSnapshotSchema, {
    productId: row.id,
    sku: row.sku,
    name: row.name,
    slug: row.slug,
    shortDescription: row.short_description,
    primaryImageUrl: primary?.url ?? "",
    price: money(row.price_minor, row.currency),
    compareAtPrice: moneyOrUndefined(row.compare_at_price_minor, row.currency),
    status: productStatuses.fromDb(row.status),
    isVisible: row.is_visible,
    stockStatus: stockStatuses.fromDb(row.stock_status),
    categoryIds: row.category_ids,
    variants: row.variants.map((v) =>
      create(VariantSnapshotSchema, {
        variantId: v.id,
        sku: v.sku,
        name: v.name,
        price: money(v.price_minor, row.currency),
        compareAtPrice: moneyOrUndefined(v.compare_at_price_minor, row.currency),
        attributes: v.attributes,
        imageUrl: v.image_url ?? "",
        stockStatus: stockStatuses.fromDb(v.stock_status),
      }),
    ),
    publishedAt: timestampOf(row.published_at),
  });
}

/** Recomputes a product's price range and variant count after its price or variants changed. */
export async function refreshPriceRange(db: Sql, productId: string): Promise<void> {
  await db.run(
    `update products p set
       min_price_minor = least(p.price_minor, coalesce((select min(v.price_minor) from product_variants v where v.product_id = p.id), p.price_minor)),
       max_price_minor = greatest(p.price_minor, coalesce((select max(v.price_minor) from product_variants v where v.product_id = p.id), p.price_minor)),
       variant_count = (select count(*) from product_variants v where v.product_id = p.id)
     where p.id = $1`,
    [productId],
  );
}

