/**
 * Shared conversions: the seed's status strings to contract enums, who is
 * looking (admin or not), tags and slugs. Money comes from kit/money.ts.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { ReservationStatus, StockAdjustmentReason } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductStatus, StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ReviewStatus } from "../../gen/ecommerce/product/v1/review_pb.js";
import { callerOf, isAdmin } from "../../kit/auth/principal.ts";
import { dbEnum } from "../../kit/enums.ts";

export const productStatuses = dbEnum<ProductStatus>([
  [ProductStatus.DRAFT, "draft"],
  [ProductStatus.ACTIVE, "active"],
  [ProductStatus.ARCHIVED, "archived"],
]);

export const stockStatuses = dbEnum<StockStatus>([
  [StockStatus.IN_STOCK, "in_stock"],
  [StockStatus.OUT_OF_STOCK, "out_of_stock"],
  [StockStatus.BACKORDER, "backorder"],
]);

export const reservationStatuses = dbEnum<ReservationStatus>([
  [ReservationStatus.ACTIVE, "active"],
  [ReservationStatus.COMMITTED, "committed"],
  [ReservationStatus.RELEASED, "released"],
  [ReservationStatus.EXPIRED, "expired"],
]);

export const reviewStatuses = dbEnum<ReviewStatus>([
  [ReviewStatus.PENDING, "pending"],
  [ReviewStatus.APPROVED, "approved"],
  [ReviewStatus.REJECTED, "rejected"],
]);

export const adjustmentReasons = dbEnum<StockAdjustmentReason>([
  [StockAdjustmentReason.RECEIVED, "received"],
  [StockAdjustmentReason.STOCKTAKE, "stocktake"],
  [StockAdjustmentReason.DAMAGED, "damaged"],
  [StockAdjustmentReason.LOST, "lost"],
  [StockAdjustmentReason.RETURNED, "returned"],
  [StockAdjustmentReason.TRANSFER, "transfer"],
  [StockAdjustmentReason.OTHER, "other"],
]);


/** Who is looking at the catalog: admins see every status and the cost price. */
export interface Viewer {
  admin: boolean;
  /** The signed-in user (or the user a service acts for), when any. */
  userId?: string;
}

export function viewerOf(ctx: HandlerContext): Viewer {
  const caller = callerOf(ctx);
  const userId = caller?.kind === "user" ? caller.userId : caller?.kind === "service" ? caller.onBehalfOf?.userId : undefined;
  return { admin: isAdmin(caller), ...(userId ? { userId } : {}) };
}

/** SQL condition: what a non-admin may see of products aliased `p`. */
export const customerVisible = "p.status = 'active' and p.is_visible";

/** Tags as stored: trimmed, lower case, deduplicated, sorted. */
export function normalizeTags(tags: readonly string[]): string[] {
  return [...new Set(tags.map((t) => t.trim().toLowerCase()).filter((t) => t !== ""))].sort();
}

export const nullIfEmpty = (v: string): string | null => (v === "" ? null : v);

/** "Merino Crew Sweater!" -> "merino-crew-sweater": lower-case ASCII words joined by "-". */
export function slugify(text: string, fallback: string): string {
  const slug = text
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 180)
    .replace(/-+$/g, "");
  return slug === "" ? fallback : slug;
}
