/**
 * The wishlist: at most 200 products per user, one item per product.
 *
 * The product snapshot (name, image, price, stock, availability) is not
 * filled yet: the Product service does not exist, so AddToWishlist stores the
 * product id and notes only, cannot check that the product exists (the
 * contract's PRODUCT_NOT_FOUND is not returned yet), and the snapshot columns
 * stay empty until a later issue consumes product.created / updated /
 * archived / out_of_stock / back_in_stock (and asks BatchGetProducts at add time).
 */
import { v7 as uuidv7 } from "uuid";
import type {
  AddToWishlistRequest,
  AddToWishlistResponse,
  ListWishlistRequest,
  ListWishlistResponse,
  RemoveFromWishlistRequest,
} from "../../gen/ecommerce/user/v1/user_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError } from "../../kit/errors.ts";
import { decodePageToken, encodePageToken, pageSizeOf } from "../../kit/paging.ts";
import { WishlistItemEntity } from "./entities.ts";
import { nullIfEmpty, wishlistItemMessage } from "./mapping.ts";
import { findProfile } from "./profiles.ts";

export const maxWishlistItems = 200;

export async function addToWishlist(em: EntityManager, userId: string, req: AddToWishlistRequest): Promise<Omit<AddToWishlistResponse, "$typeName">> {
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const existing = await tx.findOne(WishlistItemEntity, { userId, productId: req.productId });
    if (existing) {
      // Idempotent per product; a new note replaces the old one, an empty one keeps it.
      if (req.notes !== "" && existing.notes !== req.notes) {
        existing.notes = req.notes;
        existing.updatedAt = new Date();
        await tx.flush();
      }
      return { item: wishlistItemMessage(existing) };
    }
    if ((await tx.count(WishlistItemEntity, { userId })) >= maxWishlistItems) {
      throw domainError(Code.ResourceExhausted, `a wishlist holds at most ${maxWishlistItems} products; remove one first`, { reason: "WISHLIST_LIMIT_REACHED" });
    }
    const now = new Date();
    const item = tx.create(WishlistItemEntity, {
      id: uuidv7(),
      userId,
      productId: req.productId,
      notes: nullIfEmpty(req.notes),
      productAvailable: true,
      createdAt: now,
      updatedAt: now,
    });
    await tx.flush();
    return { item: wishlistItemMessage(item) };
  });
}

export async function removeFromWishlist(em: EntityManager, userId: string, req: RemoveFromWishlistRequest): Promise<void> {
  await findProfile(em, userId);
  await em.nativeDelete(WishlistItemEntity, { userId, productId: req.productId });
}

type Cursor = { t: string; i: string };

export async function listWishlist(em: EntityManager, userId: string, req: ListWishlistRequest): Promise<Omit<ListWishlistResponse, "$typeName">> {
  await findProfile(em, userId);
  const size = pageSizeOf(req.pageSize);
  const cursor = decodePageToken<Cursor>(req.pageToken, ["t", "i"]);
  const after = cursor ? new Date(cursor.t) : undefined;
  if (cursor && (Number.isNaN(after!.getTime()) || !/^[0-9a-f-]{36}$/i.test(String(cursor.i)))) {
    throw domainError(Code.InvalidArgument, "page_token: is not a token this list returned; start again without one", { reason: "INVALID_PAGE_TOKEN", field: "page_token" });
  }
  // Keyset on (created_at, id), newest first. created_at is always written from a
  // JavaScript Date (millisecond precision), so the cursor's time compares exactly.
  const rows = await em.find(
    WishlistItemEntity,
    { userId, ...(cursor ? { $or: [{ createdAt: { $lt: after! } }, { createdAt: after!, id: { $lt: cursor.i } }] } : {}) },
    { orderBy: { createdAt: "desc", id: "desc" }, limit: size + 1 },
  );
  const page = rows.slice(0, size);
  const last = page[page.length - 1];
  return {
    items: page.map(wishlistItemMessage),
    nextPageToken: rows.length > size && last ? encodePageToken({ t: last.createdAt.toISOString(), i: last.id }) : "",
    totalSize: await em.count(WishlistItemEntity, { userId }),
  };
}
