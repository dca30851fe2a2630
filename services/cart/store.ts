/**
 * Reads of carts and lines (sqlOf, mapped straight to plain records, so
 * repricing pays no entity hydration) and the guest token: 32 random bytes in
 * base64url (43 characters) given to the guest, of which only the SHA-256 is
 * stored.
 */
import { createHash, randomBytes } from "node:crypto";
import type { EntityManager } from "../../kit/db.ts";
import { sqlOf } from "../../kit/sql.ts";

export interface CartRecord {
  id: string;
  userId: string | null;
  currency: string;
  status: string;
  couponCode: string | null;
  expiresAt: Date;
  version: number;
  orderId: string | null;
  mergedIntoCartId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface ItemRecord {
  id: string;
  cartId: string;
  productId: string;
  variantId: string | null;
  sku: string;
  productName: string;
  variantName: string;
  imageUrl: string | null;
  /** price_at_add, minor units. */
  unitPrice: bigint;
  quantity: number;
  createdAt: Date;
  updatedAt: Date;
}

/** The carts a caller can act on: in use and not expired. */
export const currentStatuses = ["active", "abandoned"];

export const cartColumns = `id, user_id as "userId", currency, status, coupon_code as "couponCode", expires_at as "expiresAt",
  version::int as version, order_id as "orderId", merged_into_cart_id as "mergedIntoCartId", created_at as "createdAt", updated_at as "updatedAt"`;

const itemColumns = `id, cart_id as "cartId", product_id as "productId", variant_id as "variantId", sku, product_name as "productName",
  variant_name as "variantName", image_url as "imageUrl", unit_price as "unitPrice", quantity, created_at as "createdAt", updated_at as "updatedAt"`;

export function newGuestToken(): string {
  return randomBytes(32).toString("base64url");
}

export function guestTokenHash(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

type Raw<T> = { [K in keyof T]: T[K] extends Date ? Date | string : T[K] extends bigint ? string : T[K] };

/** A carts row selected with `cartColumns` (timestamps may arrive as text). */
export function cartOf<R extends Raw<CartRecord>>(row: R): CartRecord & Omit<R, keyof CartRecord> {
  return { ...row, expiresAt: new Date(row.expiresAt), createdAt: new Date(row.createdAt), updatedAt: new Date(row.updatedAt) };
}

const oneCart = async (em: EntityManager, text: string, params: unknown[]) => {
  const row = await sqlOf(em).one<Raw<CartRecord>>(text, params);
  return row ? cartOf(row) : undefined;
};

/** The signed-in user's current cart. */
export function userCart(em: EntityManager, userId: string): Promise<CartRecord | undefined> {
  return oneCart(em, `select ${cartColumns} from carts where user_id = $1 and status = any($2::text[]) and expires_at > now()`, [userId, currentStatuses]);
}

/** The guest cart of a token; undefined for an unknown, expired, merged or converted one. */
export function guestCart(em: EntityManager, token: string): Promise<CartRecord | undefined> {
  return oneCart(
    em,
    `select ${cartColumns} from carts where guest_token_hash = $1 and user_id is null and status = any($2::text[]) and expires_at > now()`,
    [guestTokenHash(token), currentStatuses],
  );
}

export function cartById(em: EntityManager, id: string): Promise<CartRecord | undefined> {
  return oneCart(em, `select ${cartColumns} from carts where id = $1`, [id]);
}

/** The lines of a cart, oldest first. */
export async function itemsOf(em: EntityManager, cartId: string): Promise<ItemRecord[]> {
  const rows = await sqlOf(em).all<Raw<ItemRecord>>(`select ${itemColumns} from cart_items where cart_id = $1 order by created_at, id`, [cartId]);
  return rows.map((r) => ({ ...r, unitPrice: BigInt(r.unitPrice), createdAt: new Date(r.createdAt), updatedAt: new Date(r.updatedAt) }));
}
