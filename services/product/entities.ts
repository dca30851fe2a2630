/**
 * MikroORM entities of the Product service (tables in
 * migrations/0001_product_tables.ts). Categories and reviews are written
 * through them; the stock, search and catalog paths that need set-based or
 * conditional SQL (reservations, aggregates, documents) use raw SQL on the
 * same transaction (sql.ts). search_words is written by triggers only and
 * has no entity. Optional text is null in the database and "" in
 * the contract; money is bigint minor units.
 */
import type { InferEntity } from "@mikro-orm/core";
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const CategoryEntity = defineEntity({
  name: "Category",
  tableName: "categories",
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    slug: p.text().unique(),
    description: p.text().default(""),
    parentId: p.uuid().nullable(),
    level: p.integer().default(0),
    sortOrder: p.integer().default(0),
    imageUrl: p.text().nullable(),
    isActive: p.boolean().default(true),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type CategoryRow = InferEntity<typeof CategoryEntity>;

export const ProductEntity = defineEntity({
  name: "Product",
  tableName: "products",
  properties: {
    id: p.uuid().primary(),
    sku: p.text(),
    name: p.text(),
    slug: p.text().unique(),
    description: p.text().default(""),
    shortDescription: p.text().default(""),
    currency: p.string().columnType("char(3)"),
    priceMinor: p.bigint("bigint"),
    compareAtPriceMinor: p.bigint("bigint").nullable(),
    /** Admin-only. */
    costPriceMinor: p.bigint("bigint").nullable(),
    /** draft | active | archived */
    status: p.text().default("draft"),
    isVisible: p.boolean().default(true),
    allowBackorder: p.boolean().default(false),
    stockQuantity: p.integer().default(0),
    /** in_stock | out_of_stock | backorder */
    stockStatus: p.text().default("out_of_stock"),
    lowStockThreshold: p.integer().default(0),
    lowStock: p.boolean().default(false),
    weightGrams: p.integer().default(0),
    lengthMm: p.integer().nullable(),
    widthMm: p.integer().nullable(),
    heightMm: p.integer().nullable(),
    metaTitle: p.text().default(""),
    metaDescription: p.text().default(""),
    attributes: p.json<Record<string, string>>(),
    minPriceMinor: p.bigint("bigint"),
    maxPriceMinor: p.bigint("bigint"),
    variantCount: p.integer().default(0),
    ratingCount: p.integer().default(0),
    ratingSum: p.integer().default(0),
    rating1Count: p.integer().fieldName("rating_1_count").default(0),
    rating2Count: p.integer().fieldName("rating_2_count").default(0),
    rating3Count: p.integer().fieldName("rating_3_count").default(0),
    rating4Count: p.integer().fieldName("rating_4_count").default(0),
    rating5Count: p.integer().fieldName("rating_5_count").default(0),
    ratingAverageHundredths: p.integer().generated("(case when rating_count = 0 then 0 else (rating_sum * 200 + rating_count) / (2 * rating_count) end) stored"),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
    publishedAt: p.datetime().nullable(),
  },
});
export type ProductRow = InferEntity<typeof ProductEntity>;

export const ProductVariantEntity = defineEntity({
  name: "ProductVariant",
  tableName: "product_variants",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    sku: p.text(),
    name: p.text(),
    priceMinor: p.bigint("bigint"),
    compareAtPriceMinor: p.bigint("bigint").nullable(),
    attributes: p.json<Record<string, string>>(),
    imageUrl: p.text().nullable(),
    stockQuantity: p.integer().default(0),
    stockStatus: p.text().default("out_of_stock"),
    lowStockThreshold: p.integer().default(0),
    lowStock: p.boolean().default(false),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

export const ProductSkuEntity = defineEntity({
  name: "ProductSku",
  tableName: "product_skus",
  properties: {
    skuKey: p.text().primary(),
    ownerId: p.uuid(),
    productId: p.uuid(),
  },
});

export const ProductCategoryEntity = defineEntity({
  name: "ProductCategory",
  tableName: "product_categories",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    categoryId: p.uuid(),
    position: p.integer().default(0),
    createdAt: p.datetime().onCreate(now),
  },
});

export const ProductImageEntity = defineEntity({
  name: "ProductImage",
  tableName: "product_images",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    url: p.text(),
    altText: p.text().default(""),
    sortOrder: p.integer().default(0),
    isPrimary: p.boolean().default(false),
    createdAt: p.datetime().onCreate(now),
  },
});

export const ProductTagEntity = defineEntity({
  name: "ProductTag",
  tableName: "product_tags",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    tag: p.text(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const ProductInventoryEntity = defineEntity({
  name: "ProductInventory",
  tableName: "product_inventory",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    variantId: p.uuid().nullable(),
    location: p.text().default("default"),
    quantity: p.integer().default(0),
    reservedQuantity: p.integer().default(0),
    availableQuantity: p.integer().generated("(quantity - reserved_quantity) stored"),
    lastRestockedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

export const StockReservationEntity = defineEntity({
  name: "StockReservation",
  tableName: "stock_reservations",
  properties: {
    id: p.uuid().primary(),
    orderId: p.uuid(),
    /** active | committed | released | expired */
    status: p.text().default("active"),
    linesSignature: p.text(),
    expiresAt: p.datetime(),
    createdAt: p.datetime().onCreate(now),
    committedAt: p.datetime().nullable(),
    releasedAt: p.datetime().nullable(),
    releaseReason: p.text().nullable(),
    stockReturnedAt: p.datetime().nullable(),
  },
});

export const StockReservationLineEntity = defineEntity({
  name: "StockReservationLine",
  tableName: "stock_reservation_lines",
  properties: {
    id: p.uuid().primary(),
    reservationId: p.uuid(),
    lineIndex: p.integer(),
    productId: p.uuid(),
    variantId: p.uuid().nullable(),
    sku: p.text(),
    quantity: p.integer(),
    backorderedQuantity: p.integer().default(0),
  },
});

export const StockReservationAllocationEntity = defineEntity({
  name: "StockReservationAllocation",
  tableName: "stock_reservation_allocations",
  properties: {
    id: p.uuid().primary(),
    lineId: p.uuid(),
    inventoryId: p.uuid().nullable(),
    location: p.text(),
    quantity: p.integer(),
  },
});

export const StockAdjustmentEntity = defineEntity({
  name: "StockAdjustment",
  tableName: "stock_adjustments",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    variantId: p.uuid().nullable(),
    location: p.text(),
    quantityBefore: p.integer(),
    quantityAfter: p.integer(),
    reason: p.text(),
    note: p.text().default(""),
    actor: p.text(),
    referenceId: p.uuid().nullable(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const StockRestockEntity = defineEntity({
  name: "StockRestock",
  tableName: "stock_restocks",
  properties: {
    returnId: p.uuid().primary(),
    orderId: p.uuid().nullable(),
    requestHash: p.text(),
    skippedLineIndexes: p.array<number>(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const ProductReviewEntity = defineEntity({
  name: "ProductReview",
  tableName: "product_reviews",
  properties: {
    id: p.uuid().primary(),
    productId: p.uuid(),
    userId: p.uuid(),
    rating: p.smallint(),
    title: p.text().default(""),
    comment: p.text().default(""),
    authorDisplayName: p.text().default(""),
    isVerifiedPurchase: p.boolean().default(false),
    /** pending | approved | rejected */
    status: p.text().default("pending"),
    rejectionReason: p.text().nullable(),
    helpfulCount: p.integer().default(0),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
    moderatedAt: p.datetime().nullable(),
  },
});
export type ProductReviewRow = InferEntity<typeof ProductReviewEntity>;

export const ReviewHelpfulVoteEntity = defineEntity({
  name: "ReviewHelpfulVote",
  tableName: "review_helpful_votes",
  properties: {
    reviewId: p.uuid().primary(),
    userId: p.uuid().primary(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const productEntities = [
  CategoryEntity,
  ProductEntity,
  ProductVariantEntity,
  ProductSkuEntity,
  ProductCategoryEntity,
  ProductImageEntity,
  ProductTagEntity,
  ProductInventoryEntity,
  StockReservationEntity,
  StockReservationLineEntity,
  StockReservationAllocationEntity,
  StockAdjustmentEntity,
  StockRestockEntity,
  ProductReviewEntity,
  ReviewHelpfulVoteEntity,
];
