/**
 * The storefront RPCs: they act on the caller's cart (the signed-in user's, or
 * the guest's named by its token; cart.proto, "Whose cart").
 *
 * Every change follows one path (`change`): read the cart and its lines, ask
 * the catalog once for every product involved, decide the change from that
 * state, then write it in one transaction whose first statement bumps the
 * version only if it is still the version that was read
 * (`update carts set version = version + 1 ... where version = $read`). So no
 * network call runs inside a transaction, the decision and the write see the
 * same cart, and of two concurrent changes of one version exactly one wins:
 * with expected_version the other is ABORTED (CART_VERSION_MISMATCH), without
 * it the other is decided again on the new state (at most ten times).
 */
import { create } from "@bufbuild/protobuf";
import { v7 as uuidv7 } from "uuid";
import type {
  AddItemRequest,
  ApplyCouponRequest,
  Cart,
  CartItemKey,
  CartWarning,
  ClearCartRequest,
  MergeGuestCartRequest,
  RemoveCouponRequest,
  RemoveItemRequest,
  UpdateItemQuantityRequest,
} from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { CartWarningCode, CartWarningSchema } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { type CartLine, CouponRejectionReason } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, ConnectError, domainError, failedPrecondition, invalidArgument, isUniqueViolation } from "../../kit/errors.ts";
import { sqlOf } from "../../kit/sql.ts";
import { transaction } from "../../kit/transaction.ts";
import { CartEntity, CartItemEntity } from "./entities.ts";
import { type Catalog, catalogOf, discountLines, emptyCart, type Offer, offerOf, priceCart, type Pricing } from "./pricing.ts";
import { type CartRecord, cartById, currentStatuses, guestCart, guestTokenHash, type ItemRecord, itemsOf, newGuestToken, userCart } from "./store.ts";

/** Who is asking: the signed-in user, else the guest token of the request ("" for none). */
export interface Caller {
  userId?: string;
  guestToken: string;
}

type Request = { guestToken?: string; expectedVersion?: bigint };

export const versionMismatch = (current: number, expected: bigint) =>
  domainError(Code.Aborted, `the cart is at version ${current}, not ${expected}: reload it and apply the change again`, {
    reason: "CART_VERSION_MISMATCH",
    metadata: { current_version: String(current) },
  });

const itemNotFound = () => domainError(Code.NotFound, "the cart has no such line; reload the cart", { reason: "ITEM_NOT_FOUND" });

/** The caller's current cart (cart.proto, "Whose cart"). */
export function callerCart(em: EntityManager, caller: Caller): Promise<CartRecord | undefined> {
  if (caller.userId) return userCart(em, caller.userId);
  return caller.guestToken ? guestCart(em, caller.guestToken) : Promise.resolve(undefined);
}

/** The state a change is decided on. */
interface State {
  cart: CartRecord | undefined;
  items: ItemRecord[];
  catalog: Catalog;
  currency: string;
}

interface Plan<T> {
  /** Writes the lines (plain rows, through entities) in the change's transaction; absent with nothing to write. */
  write?: (tx: EntityManager, cartId: string, now: Date) => Promise<void>;
  /** The new coupon code, null to remove it; undefined keeps it. */
  coupon?: string | null;
  warnings?: CartWarning[];
  result: T;
}

class StaleCart extends Error {}
/** The guest cart changed (or was merged) after the merge read it. */
class GuestCartChanged extends Error {}

/** Decisions of one change without expected_version before it gives up with ABORTED (each retry costs two reads). */
const maxAttempts = 10;

export interface ChangeOptions {
  /** The change creates the cart when the caller has none. */
  creates: boolean;
  /** Products the change needs besides the cart's lines (AddItem's, a merged guest cart's). */
  productIds?: string[];
  /** Currency of a cart this change creates (default: the shop's). */
  currency?: string;
}

async function change<T>(
  pricing: Pricing,
  em: EntityManager,
  caller: Caller,
  expectedVersion: bigint,
  options: ChangeOptions,
  decide: (state: State) => Promise<Plan<T>> | Plan<T>,
): Promise<{ cart: Cart; result: T }> {
  const { config } = pricing;
  let catalog: Catalog = new Map();
  for (let attempt = 1; ; attempt++) {
    const found = await callerCart(em, caller);
    const version = found?.version ?? 0;
    if (expectedVersion !== 0n && BigInt(version) !== expectedVersion) throw versionMismatch(version, expectedVersion);
    const items = found ? await itemsOf(em, found.id) : [];
    // A retry asks the catalog again only for products it has not seen in this call.
    const needed = [...items.map((i) => i.productId), ...(options.productIds ?? [])];
    if (attempt === 1 || needed.some((id) => !catalog.has(id))) catalog = await catalogOf(pricing, needed);
    const currency = found?.currency ?? options.currency ?? config.currency;
    const plan = await decide({ cart: found, items, catalog, currency });
    const tokenOf = (cart: CartRecord) => (cart.userId ? undefined : caller.guestToken);
    if (!plan.write && plan.coupon === undefined) {
      const cart = found ? await priceCart(pricing, found, items, { mode: "storefront", guestToken: tokenOf(found), warnings: plan.warnings }, catalog) : emptyCart(config, plan.warnings);
      return { cart, result: plan.result };
    }
    if (!found && !options.creates) throw itemNotFound();
    const now = new Date();
    const expiresAt = (userId: string | null | undefined) => new Date(now.getTime() + (userId ? config.customerTtlMs : config.guestTtlMs));
    let issued: string | undefined;
    let cartId: string;
    try {
      cartId = await transaction(em, async (tx) => {
        const sql = sqlOf(tx);
        if (found) {
          // The atomic version bump: only the version the change was decided on; the next change makes an ABANDONED cart ACTIVE.
          const bumped = await sql.run(
            `update carts set version = version + 1, status = 'active', updated_at = $3, expires_at = $4,
               coupon_code = case when $5::boolean then $6::text else coupon_code end
             where id = $1 and version = $2 and status = any($7::text[])`,
            [found.id, found.version, now, expiresAt(found.userId), plan.coupon !== undefined, plan.coupon ?? null, currentStatuses],
          );
          if (bumped === 0) throw new StaleCart();
          await plan.write?.(tx, found.id, now);
          await tx.flush();
          return found.id;
        }
        if (caller.userId) {
          // An expired cart is nobody's: purged now, so the user's new cart can be the current one.
          await sql.run("delete from carts where user_id = $1 and status = any($2::text[]) and expires_at <= $3", [caller.userId, currentStatuses, now]);
        } else {
          issued = newGuestToken();
        }
        const id = uuidv7();
        tx.create(CartEntity, {
          id,
          userId: caller.userId ?? null,
          guestTokenHash: issued ? guestTokenHash(issued) : null,
          currency,
          status: "active",
          couponCode: plan.coupon ?? null,
          expiresAt: expiresAt(caller.userId),
          version: 1,
          orderId: null,
          mergedIntoCartId: null,
          createdAt: now,
          updatedAt: now,
        });
        await tx.flush();
        await plan.write?.(tx, id, now);
        await tx.flush();
        return id;
      });
    } catch (error) {
      // Another change of this version won (or created the user's cart first).
      if (!(error instanceof StaleCart) && !isUniqueViolation(error)) throw error;
      if (expectedVersion !== 0n) {
        const current = await callerCart(em, caller);
        throw versionMismatch(current?.version ?? 0, expectedVersion);
      }
      if (attempt < maxAttempts) continue;
      throw domainError(Code.Aborted, "the cart kept changing while this change was made; retry", { reason: "CART_VERSION_MISMATCH", metadata: { current_version: String(version) } });
    }
    const cart = (await cartById(em, cartId))!;
    const priced = await priceCart(pricing, cart, await itemsOf(em, cartId), { mode: "storefront", guestToken: issued ?? tokenOf(cart), warnings: plan.warnings }, catalog);
    return { cart: priced, result: plan.result };
  }
}

/** The line of a request (by id, or by product and variant). */
function lineOf(items: ItemRecord[], line: { case: "itemId"; value: string } | { case: "product"; value: CartItemKey } | { case: undefined; value?: undefined }) {
  if (line.case === "itemId") return items.find((i) => i.id === line.value);
  if (line.case === "product") return items.find((i) => i.productId === line.value.productId && (i.variantId ?? "") === line.value.variantId);
  return undefined;
}

/** The AddItem error of a product that cannot be put in the cart. */
function refused(offer: Offer, productId: string): ConnectError {
  switch (offer.refusal) {
    case "PRODUCT_NOT_FOUND":
      return domainError(Code.NotFound, `product ${productId} does not exist or is not on sale`, { reason: "PRODUCT_NOT_FOUND", field: "product_id" });
    case "VARIANT_REQUIRED":
      return invalidArgument("variant_id", "this product has variants: choose one", "VARIANT_REQUIRED");
    case "VARIANT_NOT_FOUND":
      return invalidArgument("variant_id", `not a variant of product ${productId}`, "VARIANT_NOT_FOUND");
    case "PRODUCT_UNAVAILABLE":
      return failedPrecondition(`${offer.name} is not on sale`, "PRODUCT_UNAVAILABLE");
    case "CURRENCY_MISMATCH":
      return failedPrecondition(`${offer.name} is not sold in the cart's currency`, "CURRENCY_MISMATCH");
    default:
      return failedPrecondition(`${offer.name} is out of stock`, "OUT_OF_STOCK");
  }
}

/** Checks that a line may hold `quantity` units of `offer` (AddItem, raising a quantity). */
function checkQuantity(pricing: Pricing, offer: Offer, productId: string, quantity: number): void {
  if (offer.refusal) throw refused(offer, productId);
  const max = pricing.config.maxLineQuantity;
  if (quantity > max) throw failedPrecondition(`a line holds at most ${max} units`, "QUANTITY_LIMIT_EXCEEDED", { max: String(max) });
  if (quantity > offer.maxQuantity) {
    throw failedPrecondition(`only ${offer.available} of ${offer.name} are available`, "INSUFFICIENT_STOCK", { available: String(offer.available) });
  }
}

const lineFields = (offer: Offer) => ({
  sku: offer.sku!,
  productName: offer.name!,
  variantName: offer.variantName,
  imageUrl: offer.imageUrl || null,
  unitPrice: offer.unitPrice!,
});

export async function addItem(pricing: Pricing, em: EntityManager, caller: Caller, req: AddItemRequest) {
  const { cart, result } = await change(pricing, em, caller, req.expectedVersion, { creates: true, productIds: [req.productId] }, (s) => {
    const offer = offerOf(s.catalog, req.productId, req.variantId, s.currency, pricing.config.maxLineQuantity);
    const line = s.items.find((i) => i.productId === req.productId && (i.variantId ?? "") === req.variantId);
    if (offer.refusal) throw refused(offer, req.productId);
    if (!line && s.items.length >= pricing.config.maxLines) {
      throw failedPrecondition(`a cart holds at most ${pricing.config.maxLines} lines; remove one first`, "CART_ITEM_LIMIT_REACHED", { max: String(pricing.config.maxLines) });
    }
    checkQuantity(pricing, offer, req.productId, (line?.quantity ?? 0) + req.quantity);
    const itemId = line?.id ?? uuidv7();
    return {
      result: itemId,
      write: async (tx, cartId, now) => {
        if (line) {
          // Adding to a line resets its price_at_add to the current price.
          await tx.nativeUpdate(CartItemEntity, { id: line.id }, { ...lineFields(offer), quantity: line.quantity + req.quantity, updatedAt: now });
        } else {
          tx.create(CartItemEntity, { id: itemId, cartId, productId: req.productId, variantId: req.variantId || null, quantity: req.quantity, createdAt: now, updatedAt: now, ...lineFields(offer) });
        }
      },
    };
  });
  return { cart, itemId: result };
}

export async function updateItemQuantity(pricing: Pricing, em: EntityManager, caller: Caller, req: UpdateItemQuantityRequest) {
  const { cart } = await change(pricing, em, caller, req.expectedVersion, { creates: false }, (s) => {
    const line = lineOf(s.items, req.line);
    if (!line) throw itemNotFound();
    if (req.quantity === 0) return { result: undefined, write: async (tx) => void (await tx.nativeDelete(CartItemEntity, { id: line.id })) };
    const offer = offerOf(s.catalog, line.productId, line.variantId ?? "", s.currency, pricing.config.maxLineQuantity);
    // Lowering always succeeds, even for a product no longer sold; raising checks like AddItem.
    if (req.quantity > line.quantity) checkQuantity(pricing, offer, line.productId, req.quantity);
    const reprice = offer.unitPrice !== undefined ? { unitPrice: offer.unitPrice } : {};
    return { result: undefined, write: async (tx, _id, now) => void (await tx.nativeUpdate(CartItemEntity, { id: line.id }, { quantity: req.quantity, updatedAt: now, ...reprice })) };
  });
  return { cart };
}

export async function removeItem(pricing: Pricing, em: EntityManager, caller: Caller, req: RemoveItemRequest) {
  const { cart } = await change(pricing, em, caller, req.expectedVersion, { creates: false }, (s) => {
    const line = lineOf(s.items, req.line);
    if (!line) throw itemNotFound();
    return { result: undefined, write: async (tx) => void (await tx.nativeDelete(CartItemEntity, { id: line.id })) };
  });
  return { cart };
}

export async function clearCart(pricing: Pricing, em: EntityManager, caller: Caller, req: ClearCartRequest) {
  const { cart } = await change(pricing, em, caller, req.expectedVersion, { creates: false }, (s) => {
    // Idempotent: an empty cart without a coupon (or no cart) is left as it is.
    if (!s.cart || (s.items.length === 0 && !s.cart.couponCode)) return { result: undefined };
    return { result: undefined, coupon: null, write: async (tx, cartId) => void (await tx.nativeDelete(CartItemEntity, { cartId })) };
  });
  return { cart };
}

/** Discount's ValidateCoupon on the cart as it would be; the caller's token is forwarded, so per-customer rules are checked for a signed-in user. */
async function validateCoupon(pricing: Pricing, code: string, currency: string, lines: CartLine[]) {
  return pricing.discounts().validateCoupon({ code, cart: lines.length > 0 ? { currencyCode: currency, lines, couponCodes: [] } : undefined });
}

export async function applyCoupon(pricing: Pricing, em: EntityManager, caller: Caller, req: ApplyCouponRequest) {
  const { cart } = await change(pricing, em, caller, req.expectedVersion, { creates: true }, async (s) => {
    const answer = await validateCoupon(pricing, req.code, s.currency, await discountLines(pricing, s.catalog, s.items, s.currency, "storefront"));
    if (!answer.valid) {
      const reason = CouponRejectionReason[answer.reason] ?? "NOT_FOUND";
      const metadata: Record<string, string> = answer.minSubtotal ? { min_subtotal_minor: String(answer.minSubtotal.amountMinor) } : {};
      throw failedPrecondition(answer.message || `coupon ${req.code.trim()} cannot be used (${reason.toLowerCase().replace(/_/g, " ")})`, `COUPON_${reason}`, metadata);
    }
    const code = answer.offer?.code || req.code.trim().toUpperCase();
    return s.cart?.couponCode === code ? { result: undefined } : { result: undefined, coupon: code };
  });
  return { cart };
}

export async function removeCoupon(pricing: Pricing, em: EntityManager, caller: Caller, req: RemoveCouponRequest) {
  const { cart } = await change(pricing, em, caller, req.expectedVersion, { creates: false }, (s) =>
    s.cart?.couponCode ? { result: undefined, coupon: null } : { result: undefined },
  );
  return { cart };
}

const mergeWarning = (code: CartWarningCode, message: string, init: { itemId?: string; productId?: string; variantId?: string | null }) =>
  create(CartWarningSchema, { code, message, itemId: init.itemId ?? "", productId: init.productId ?? "", variantId: init.variantId ?? "" });

export async function mergeGuestCart(pricing: Pricing, em: EntityManager, userId: string, req: MergeGuestCartRequest) {
  const caller: Caller = { userId, guestToken: "" };
  for (let attempt = 1; ; attempt++) {
    const guest = await guestCart(em, req.guestToken);
    if (!guest) {
      // Idempotent: nothing to merge (unknown, expired, converted or already merged); the user's cart as it is.
      const { cart } = await change(pricing, em, caller, req.expectedVersion, { creates: false }, () => ({ result: undefined }));
      return { cart, merged: false, mergedLineCount: 0 };
    }
    try {
      const { cart, result } = await mergeInto(pricing, em, caller, guest, req);
      return { cart, merged: true, mergedLineCount: result };
    } catch (error) {
      // The guest cart changed meanwhile (a concurrent merge of the token, a guest tab still adding): read it again.
      if (!(error instanceof GuestCartChanged)) throw error;
      if (attempt >= maxAttempts) throw domainError(Code.Aborted, "the guest cart kept changing during the merge; retry", { reason: "CART_VERSION_MISMATCH" });
    }
  }
}

async function mergeInto(pricing: Pricing, em: EntityManager, caller: Caller, guest: CartRecord, req: MergeGuestCartRequest) {
  const { config } = pricing;
  const guestItems = await itemsOf(em, guest.id);
  return change(
    pricing,
    em,
    caller,
    req.expectedVersion,
    { creates: true, productIds: guestItems.map((i) => i.productId), currency: guest.currency },
    async (s) => {
      const warnings: CartWarning[] = [];
      const lines = s.items.map((i) => ({ ...i }));
      const updates: { id: string; quantity: number; offer: Offer }[] = [];
      const inserts: { item: ItemRecord; quantity: number; offer: Offer; id: string }[] = [];
      for (const g of guestItems) {
        const offer = offerOf(s.catalog, g.productId, g.variantId ?? "", s.currency, config.maxLineQuantity);
        const existing = lines.find((l) => l.productId === g.productId && l.variantId === g.variantId);
        if (offer.refusal) {
          warnings.push(mergeWarning(CartWarningCode.ITEM_NOT_MERGED, `${offer.name ?? g.productName} is no longer sold and was not merged`, g));
          continue;
        }
        const wanted = (existing?.quantity ?? 0) + g.quantity;
        // Clamped to the line maximum and to what stock allows; never below what the user's line already holds.
        const quantity = Math.max(existing?.quantity ?? 1, Math.min(wanted, offer.maxQuantity));
        if (existing) {
          updates.push({ id: existing.id, quantity, offer });
          existing.quantity = quantity;
          if (quantity < wanted) warnings.push(mergeWarning(CartWarningCode.QUANTITY_ADJUSTED, `the quantity of ${offer.name} was capped at ${quantity}`, { itemId: existing.id, productId: g.productId, variantId: g.variantId }));
        } else if (lines.length >= config.maxLines) {
          warnings.push(mergeWarning(CartWarningCode.ITEM_NOT_MERGED, `the cart is full (${config.maxLines} lines): ${offer.name} was not merged`, g));
        } else {
          const id = uuidv7();
          lines.push({ ...g, id, quantity });
          inserts.push({ item: g, quantity, offer, id });
          if (quantity < wanted) warnings.push(mergeWarning(CartWarningCode.QUANTITY_ADJUSTED, `the quantity of ${offer.name} was capped at ${quantity}`, { itemId: id, productId: g.productId, variantId: g.variantId }));
        }
      }
      // The guest's coupon is the more recent choice: it replaces the user's when it applies to the merged cart.
      let coupon: string | undefined;
      if (guest.couponCode && guest.couponCode !== s.cart?.couponCode) {
        const answer = await validateCoupon(pricing, guest.couponCode, s.currency, await discountLines(pricing, s.catalog, lines, s.currency, "storefront")).catch((error: unknown) => {
          pricing.log.warn({ err: ConnectError.from(error).rawMessage }, "guest coupon not checked at merge; the user's coupon stays");
          return undefined;
        });
        if (answer?.valid) coupon = guest.couponCode;
      }
      return {
        result: updates.length + inserts.length,
        warnings,
        coupon,
        write: async (tx: EntityManager, cartId: string, now: Date) => {
          // The guest cart first, conditionally: a concurrent merge or change of it makes this change start again.
          const moved = await sqlOf(tx).run(
            `update carts set status = 'merged', merged_into_cart_id = $3, guest_token_hash = null, version = version + 1, updated_at = $4
             where id = $1 and version = $2 and status = any($5::text[])`,
            [guest.id, guest.version, cartId, now, currentStatuses],
          );
          if (moved === 0) throw new GuestCartChanged();
          for (const u of updates) await tx.nativeUpdate(CartItemEntity, { id: u.id }, { ...lineFields(u.offer), quantity: u.quantity, updatedAt: now });
          for (const i of inserts) {
            tx.create(CartItemEntity, { id: i.id, cartId, productId: i.item.productId, variantId: i.item.variantId, quantity: i.quantity, createdAt: now, updatedAt: now, ...lineFields(i.offer) });
          }
        },
      };
    },
  );
}

export { cartById };
