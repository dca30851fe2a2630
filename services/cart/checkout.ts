/**
 * The Order service's view of a cart (INTERNAL, allowed_callers: order) and
 * the admin views. Checkout prices in "checkout" mode: no degraded answer
 * without discounts. MarkCartConverted is idempotent per order id and
 * publishes cart.converted once, in the transaction that converts.
 */
import { CartConvertedSchema } from "../../gen/ecommerce/cart/v1/events_pb.js";
import type { GetCartForCheckoutRequest, ListCartsRequest, MarkCartConvertedRequest } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { dateOf, timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { pageOf } from "../../kit/paging.ts";
import { sqlOf } from "../../kit/sql.ts";
import { transaction } from "../../kit/transaction.ts";
import { versionMismatch } from "./carts.ts";
import { cartStatuses, summaryMessage } from "./mapping.ts";
import { priceCart, type Pricing } from "./pricing.ts";
import { type CartRecord, cartById, cartColumns, cartOf, currentStatuses, itemsOf } from "./store.ts";

const cartNotFound = (id: string) =>
  domainError(Code.NotFound, `no cart ${id} for this user`, { reason: "CART_NOT_FOUND", resource: { type: "cart", name: id } });

/** The user's cart by id; a guest cart or another user's is not found. */
async function ownCart(em: EntityManager, cartId: string, userId: string): Promise<CartRecord> {
  const cart = await cartById(em, cartId);
  if (!cart || cart.userId !== userId) throw cartNotFound(cartId);
  return cart;
}

function notActive(cart: CartRecord) {
  const metadata: Record<string, string> = { status: cart.status };
  if (cart.orderId) metadata.order_id = cart.orderId;
  return failedPrecondition(`cart ${cart.id} is ${cart.expiresAt <= new Date() && currentStatuses.includes(cart.status) ? "expired" : cart.status}, not in use`, "CART_NOT_ACTIVE", metadata);
}

export async function getCartForCheckout(pricing: Pricing, em: EntityManager, req: GetCartForCheckoutRequest) {
  const cart = await ownCart(em, req.cartId, req.userId);
  if (!currentStatuses.includes(cart.status) || cart.expiresAt <= new Date()) throw notActive(cart);
  if (req.expectedVersion !== 0n && BigInt(cart.version) !== req.expectedVersion) throw versionMismatch(cart.version, req.expectedVersion);
  const items = await itemsOf(em, cart.id);
  if (items.length === 0) throw failedPrecondition(`cart ${cart.id} is empty`, "CART_EMPTY");
  return { cart: await priceCart(pricing, cart, items, { mode: "checkout" }) };
}

export async function markCartConverted(pricing: Pricing, em: EntityManager, req: MarkCartConvertedRequest) {
  await transaction(em, async (tx) => {
    const sql = sqlOf(tx);
    const row = await sql.one<CartRecord>(`select ${cartColumns} from carts where id = $1 for update`, [req.cartId]);
    const cart = row && cartOf(row);
    if (!cart || cart.userId !== req.userId) throw cartNotFound(req.cartId);
    if (cart.status === "converted") {
      if (cart.orderId === req.orderId) return; // a retry of this order
      throw failedPrecondition(`cart ${cart.id} was converted into order ${cart.orderId}`, "CART_ALREADY_CONVERTED", { order_id: cart.orderId ?? "" });
    }
    if (cart.status === "merged") throw notActive(cart);
    // The order is placed: an expired-but-not-purged cart is converted too, so the link to the order holds.
    await sql.run("update carts set status = 'converted', order_id = $2, version = version + 1, updated_at = $3 where id = $1", [cart.id, req.orderId, new Date()]);
    publishEvent(tx, CartConvertedSchema, { cartId: cart.id, userId: req.userId, orderId: req.orderId, cartCreatedAt: timestampOf(cart.createdAt) });
    await tx.flush();
  });
  const cart = (await cartById(em, req.cartId))!;
  return { cart: await priceCart(pricing, cart, await itemsOf(em, cart.id), { mode: "storefront" }) };
}

export async function getCartById(pricing: Pricing, em: EntityManager, cartId: string) {
  const cart = await cartById(em, cartId);
  if (!cart) throw domainError(Code.NotFound, `no cart ${cartId}`, { reason: "CART_NOT_FOUND", resource: { type: "cart", name: cartId } });
  return { cart: await priceCart(pricing, cart, await itemsOf(em, cart.id), { mode: "storefront", admin: true }) };
}

const orders = {
  "updated_at desc": { column: "updated_at", dir: "desc" },
  "updated_at asc": { column: "updated_at", dir: "asc" },
  "created_at desc": { column: "created_at", dir: "desc" },
  "created_at asc": { column: "created_at", dir: "asc" },
} as const;

/** Carts as stored (no repricing), keyset-paged on (sort time, id). */
export async function listCarts(em: EntityManager, req: ListCartsRequest) {
  const pages = pageOf(req, { t: "timestamptz", i: "uuid" });
  const { column, dir } = orders[(req.orderBy || "updated_at desc") as keyof typeof orders];
  const cursor = pages.after;
  const params: unknown[] = [
    req.userId || null,
    req.statuses.map((s) => cartStatuses.toDb(s)),
    req.guestsOnly && !req.userId,
    dateOf(req.updatedBefore) ?? null,
    dateOf(req.updatedAfter) ?? null,
    cursor ? cursor.t : null,
    cursor ? cursor.i : null,
    pages.size + 1,
  ];
  const rows = await sqlOf(em).all<CartRecord & { lineCount: number; itemCount: number; storedSubtotal: string; sortKey: string }>(
    `select ${cartColumns}, ${column}::text as "sortKey", t."lineCount", t."itemCount", t."storedSubtotal"
     from carts
     cross join lateral (
       select count(*)::int as "lineCount", coalesce(sum(quantity), 0)::int as "itemCount", coalesce(sum(unit_price * quantity), 0)::text as "storedSubtotal"
       from cart_items where cart_id = carts.id
     ) t
     where ($1::uuid is null or user_id = $1)
       and (cardinality($2::text[]) = 0 or status = any($2::text[]))
       and (not $3::boolean or user_id is null)
       and ($4::timestamptz is null or updated_at < $4)
       and ($5::timestamptz is null or updated_at >= $5)
       and ($6::timestamptz is null or (${column}, id) ${dir === "desc" ? "<" : ">"} ($6::timestamptz, $7::uuid))
     order by ${column} ${dir}, id ${dir}
     limit $8`,
    params,
  );
  const page = rows.slice(0, pages.size);
  const last = page[page.length - 1];
  return {
    carts: page.map((r) => summaryMessage(cartOf(r), { lineCount: r.lineCount, itemCount: r.itemCount, storedSubtotal: BigInt(r.storedSubtotal) })),
    nextPageToken: rows.length > pages.size && last ? pages.next({ t: last.sortKey, i: last.id }) : "",
  };
}
