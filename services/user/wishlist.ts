/**
 * The wishlist: at most 200 products per user, one item per product.
 *
 * Adding a product asks the Product service (BatchGetProducts, on behalf of
 * the caller) for it and stores its snapshot (name, primary image, price,
 * stock, availability) with the catalog's updated_at as the snapshot's time;
 * a product that does not exist or is not on sale (archived, draft, hidden)
 * is NOT_FOUND PRODUCT_NOT_FOUND. When the Product service cannot answer, the
 * add fails with its UNAVAILABLE (naming the peer) rather than storing an
 * unchecked product. Re-adding a product already on the list does not ask
 * the catalog: it only changes the notes. From then on the snapshot follows
 * the product events (wishlist-snapshots.ts).
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
import type { Product } from "../../gen/ecommerce/product/v1/product_pb.js";
import { dateOf } from "../../kit/convert.ts";
import { Code, domainError } from "../../kit/errors.ts";
import { pageOf } from "../../kit/paging.ts";
import { sqlOf } from "../../kit/sql.ts";
import { WishlistItemEntity } from "./entities.ts";
import { isPresent, type Nullable, nullIfEmpty, type WishlistItemFields, wishlistItemColumns, wishlistItemMessage } from "./mapping.ts";
import { findProfile, profileNotFound } from "./profiles.ts";
import { factsOfProduct } from "./wishlist-snapshots.ts";

export const maxWishlistItems = 200;

/** The product as the catalog shows it to the caller; undefined when it does not exist or is not visible to them. */
export type ProductLookup = (productId: string) => Promise<Product | undefined>;

const productNotFound = (productId: string) =>
  domainError(Code.NotFound, `product ${productId} does not exist or is not on sale`, { reason: "PRODUCT_NOT_FOUND", field: "product_id" });

export async function addToWishlist(
  em: EntityManager,
  lookupProduct: ProductLookup,
  userId: string,
  req: AddToWishlistRequest,
): Promise<Omit<AddToWishlistResponse, "$typeName">> {
  await findProfile(em, userId);
  // Asked before the transaction opens, so no row lock waits on the network.
  const onList = await em.findOne(WishlistItemEntity, { userId, productId: req.productId });
  let product = onList ? undefined : await lookupProduct(req.productId);
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
    // Removed by a concurrent call since we looked: the catalog was not asked yet.
    product ??= await lookupProduct(req.productId);
    if (!product) throw productNotFound(req.productId);
    const facts = factsOfProduct(product);
    // An admin's token sees drafts and archived products too: only what customers can buy may be added.
    if (!facts.available) throw productNotFound(req.productId);
    const now = new Date();
    const catalogTime = dateOf(product.updatedAt) ?? null;
    const item = tx.create(WishlistItemEntity, {
      id: uuidv7(),
      userId,
      productId: req.productId,
      productName: facts.name,
      productImageUrl: facts.imageUrl,
      productPriceMinor: facts.priceMinor,
      productPriceCurrency: facts.priceCurrency,
      inStock: facts.inStock,
      productAvailable: true,
      snapshotAt: catalogTime,
      stockAt: catalogTime,
      notes: nullIfEmpty(req.notes),
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

/**
 * ListWishlist in one statement: the profile (NOT_FOUND without one), the page of its
 * items and their total, mapped straight to messages.
 */
export async function listWishlist(em: EntityManager, userId: string, req: ListWishlistRequest): Promise<Omit<ListWishlistResponse, "$typeName">> {
  const pages = pageOf(req, { t: "timestamptz", i: "uuid" });
  const { after: cursor, size } = pages;
  // Keyset on (created_at, id), newest first. created_at is always written from a
  // JavaScript Date (millisecond precision), so the cursor's time compares exactly.
  const params: unknown[] = [userId, size + 1, ...(cursor ? [cursor.t, cursor.i] : [])];
  const rows = await sqlOf(em).all<Nullable<WishlistItemFields> & { totalSize: number }>(
    `select ${wishlistItemColumns}, t.total as "totalSize" from user_profiles p
       cross join lateral (select count(*)::int as total from user_wishlist_items c where c.user_id = p.user_id) t
       left join lateral (
         select * from user_wishlist_items i where i.user_id = p.user_id${cursor ? " and (i.created_at, i.id) < ($3::timestamptz, $4::uuid)" : ""}
          order by i.created_at desc, i.id desc limit $2) w on true
      where p.user_id = $1
      order by w.created_at desc, w.id desc`,
    params,
  );
  if (rows.length === 0) throw profileNotFound(userId);
  const items = rows.filter(isPresent);
  const page = items.slice(0, size);
  const last = page[page.length - 1];
  return {
    items: page.map(wishlistItemMessage),
    nextPageToken: items.length > size && last ? pages.next({ t: new Date(last.createdAt).toISOString(), i: last.id }) : "",
    totalSize: rows[0]!.totalSize,
  };
}
