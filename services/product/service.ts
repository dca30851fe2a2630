/**
 * The Product service: the catalog (ProductService, CategoryService), stock
 * and reservations (InventoryService), reviews (ReviewService) and search
 * (SearchService), package ecommerce.product.v1. Publishes the catalog and
 * stock events on PRODUCT_EVENTS, consumes order.cancelled, and runs the
 * reservation sweeper.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { file_ecommerce_product_v1_events } from "../../gen/ecommerce/product/v1/events_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ReviewService } from "../../gen/ecommerce/product/v1/review_pb.js";
import { SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import { callerOf, requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { sqlOf } from "../../kit/sql.ts";
import { defineService, type ServiceContext } from "../../kit/server.ts";
import { createCategory, deleteCategory, getCategory, getCategoryTree, listCategories, moveCategory, updateCategory } from "./categories.ts";
import { loadProductConfig, type ProductServiceConfig } from "./config.ts";
import { productConsumers } from "./consumers.ts";
import { productEntities } from "./entities.ts";
import { addImage, deleteImage, reorderImages, setPrimaryImage, updateImage } from "./images.ts";
import { adjustStock, getStock, listStockItems, restockItems, setLowStockThreshold } from "./inventory.ts";
import { reservationSweeper } from "./jobs.ts";
import { viewerOf } from "./mapping.ts";
import { ProductTables } from "./migrations/0001_product_tables.ts";
import { ProductCategoryIds } from "./migrations/0002_product_category_ids.ts";
import { ProductSearchPostings } from "./migrations/0003_search_postings.ts";
import { archiveProduct, batchGetProducts, createProduct, getProduct, listProducts, setProductTags, updateProduct } from "./products.ts";
import { commitReservation, listReservations, releaseReservation, reserveStock } from "./reservations.ts";
import {
  createReview,
  deleteMyReview,
  getMyReview,
  getRatingSummary,
  listMyReviews,
  listReviews,
  listReviewsForModeration,
  markReviewHelpful,
  moderateReview,
  type PurchaseCheck,
  updateMyReview,
} from "./reviews.ts";
import { searchProducts, suggestProducts } from "./search.ts";
import { createVariant, deleteVariant, updateVariant } from "./variants.ts";

/** Who changed stock, for the adjustment log: an admin's user id or "service:<name>". */
function actorOf(ctx: HandlerContext): string {
  const caller = callerOf(ctx);
  if (caller?.kind === "user") return caller.userId;
  if (caller?.kind === "service") return `service:${caller.service}`;
  return "unknown";
}

/**
 * Asks Order whether the user bought the product. Deviation from the contract
 * (which says CreateReview fails with UNAVAILABLE): when Order cannot answer
 * in time, the review is stored as not verified, so writing a review never
 * depends on Order being up.
 */
function purchaseCheck(svc: ServiceContext, config: ProductServiceConfig): PurchaseCheck {
  return async (userId, productId) => {
    try {
      const answer = await svc.peers.client(OrderService).checkVerifiedPurchase({ userId, productId }, { timeoutMs: config.verifiedPurchaseTimeoutMs });
      return answer.verified;
    } catch (error) {
      svc.log.warn({ err: (error as Error).message, product_id: productId }, "verified-purchase check failed; the review is stored as not verified");
      return false;
    }
  };
}

export const productService = defineService({
    name: "product",
    entities: productEntities,
    migrations: [
      { name: "0001_product_tables", class: ProductTables },
      { name: "0002_product_category_ids", class: ProductCategoryIds },
      { name: "0003_search_postings", class: ProductSearchPostings },
    ],
    publishes: file_ecommerce_product_v1_events,
    consumers: () => productConsumers(),
    setup: (ctx) => loadProductConfig(ctx.env),
    jobs: (ctx, cfg) => [reservationSweeper(ctx, cfg)],
    routes(router, svc, cfg) {
      const checkPurchase = purchaseCheck(svc, cfg);
      const me = (ctx: HandlerContext) => requireUser(ctx).userId;

      router.service(ProductService, {
        createProduct: (req, ctx) => createProduct(emOf(ctx), viewerOf(ctx), req),
        // Reads: the call's Sql, no EntityManager forked.
        getProduct: (req, ctx) => getProduct(sqlOf(ctx), viewerOf(ctx), req),
        batchGetProducts: (req, ctx) => batchGetProducts(sqlOf(ctx), viewerOf(ctx), req),
        listProducts: (req, ctx) => listProducts(sqlOf(ctx), viewerOf(ctx), cfg.shopCurrency, req),
        updateProduct: (req, ctx) => updateProduct(emOf(ctx), viewerOf(ctx), req),
        archiveProduct: (req, ctx) => archiveProduct(emOf(ctx), viewerOf(ctx), req),
        createVariant: (req, ctx) => createVariant(emOf(ctx), viewerOf(ctx), req),
        updateVariant: (req, ctx) => updateVariant(emOf(ctx), viewerOf(ctx), req),
        deleteVariant: async (req, ctx) => (await deleteVariant(emOf(ctx), viewerOf(ctx), req), {}),
        addImage: (req, ctx) => addImage(emOf(ctx), viewerOf(ctx), req),
        updateImage: (req, ctx) => updateImage(emOf(ctx), req),
        deleteImage: async (req, ctx) => (await deleteImage(emOf(ctx), viewerOf(ctx), req), {}),
        setPrimaryImage: (req, ctx) => setPrimaryImage(emOf(ctx), viewerOf(ctx), req),
        reorderImages: (req, ctx) => reorderImages(emOf(ctx), req),
        setProductTags: (req, ctx) => setProductTags(emOf(ctx), viewerOf(ctx), req),
      });

      router.service(CategoryService, {
        createCategory: (req, ctx) => createCategory(emOf(ctx), req),
        getCategory: (req, ctx) => getCategory(sqlOf(ctx), viewerOf(ctx), req),
        listCategories: (req, ctx) => listCategories(sqlOf(ctx), viewerOf(ctx), req),
        getCategoryTree: (req, ctx) => getCategoryTree(sqlOf(ctx), viewerOf(ctx), req),
        updateCategory: (req, ctx) => updateCategory(emOf(ctx), req),
        moveCategory: (req, ctx) => moveCategory(emOf(ctx), req),
        deleteCategory: async (req, ctx) => (await deleteCategory(emOf(ctx), req), {}),
      });

      router.service(InventoryService, {
        getStock: (req, ctx) => getStock(sqlOf(ctx), req),
        listStockItems: (req, ctx) => listStockItems(sqlOf(ctx), req),
        adjustStock: (req, ctx) => adjustStock(emOf(ctx), actorOf(ctx), req),
        setLowStockThreshold: (req, ctx) => setLowStockThreshold(emOf(ctx), req),
        reserveStock: (req, ctx) => reserveStock(emOf(ctx), cfg.reservationTtlSeconds, req),
        releaseReservation: (req, ctx) => releaseReservation(emOf(ctx), req),
        commitReservation: (req, ctx) => commitReservation(emOf(ctx), req),
        restockItems: (req, ctx) => restockItems(emOf(ctx), actorOf(ctx), req),
        listReservations: (req, ctx) => listReservations(sqlOf(ctx), req),
      });

      router.service(ReviewService, {
        createReview: (req, ctx) => createReview(emOf(ctx), viewerOf(ctx), me(ctx), checkPurchase, req),
        getMyReview: (req, ctx) => getMyReview(sqlOf(ctx), viewerOf(ctx), me(ctx), req),
        listMyReviews: (req, ctx) => listMyReviews(sqlOf(ctx), viewerOf(ctx), me(ctx), req),
        updateMyReview: (req, ctx) => updateMyReview(emOf(ctx), viewerOf(ctx), me(ctx), req),
        deleteMyReview: async (req, ctx) => (await deleteMyReview(emOf(ctx), me(ctx), req), {}),
        listReviews: (req, ctx) => listReviews(sqlOf(ctx), viewerOf(ctx), req),
        getRatingSummary: (req, ctx) => getRatingSummary(sqlOf(ctx), viewerOf(ctx), req),
        markReviewHelpful: (req, ctx) => markReviewHelpful(emOf(ctx), me(ctx), req),
        listReviewsForModeration: (req, ctx) => listReviewsForModeration(sqlOf(ctx), viewerOf(ctx), req),
        moderateReview: (req, ctx) => moderateReview(emOf(ctx), viewerOf(ctx), req),
      });

      router.service(SearchService, {
        // Reads: the call's Sql, no EntityManager forked.
        searchProducts: (req, ctx) => searchProducts(sqlOf(ctx), viewerOf(ctx), cfg.shopCurrency, req),
        suggestProducts: (req, ctx) => suggestProducts(sqlOf(ctx), req),
      });
    },
});
