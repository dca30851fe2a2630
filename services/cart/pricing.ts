/**
 * Repricing: every response is the stored cart (lines and quantities, the
 * coupon code) priced at that moment. Unit prices, availability and stock come
 * from the catalog (one BatchGetProducts per cart, not per line), discounts
 * from the Discount service (one CalculateDiscounts); stored prices are only
 * the price_at_add of each line. Totals are bigint minor units, computed here.
 *
 * Degradation: the catalog is required (its UNAVAILABLE, naming the product
 * service, fails the call); the Discount service is not for storefront reads
 * and writes (the cart is shown without discounts and with the warning
 * DISCOUNTS_UNAVAILABLE, as Saleor and Medusa show a cart whose promotion
 * module fails), but checkout (GetCartForCheckout) fails instead, so an order
 * is never priced without its discounts.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { type Cart, type CartItem, CartItemSchema, CartSchema, type CartWarning, CartWarningCode, CartWarningSchema, CartDiscountSchema } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { type CartLine, CartLineSchema, CouponRejectionReason, DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { type Product, ProductService, ProductStatus, StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { Code, ConnectError } from "../../kit/errors.ts";
import type { Logger } from "../../kit/logger.ts";
import { money, moneyOrUndefined } from "../../kit/money.ts";
import type { CategoryAncestry } from "./categories.ts";
import type { CartServiceConfig } from "./config.ts";
import { cartStatuses } from "./mapping.ts";
import type { CartRecord, ItemRecord } from "./store.ts";

/** What pricing needs: settings and the two peers. */
export interface Pricing {
  config: CartServiceConfig;
  log: Logger;
  categories: CategoryAncestry;
  products(): Client<typeof ProductService>;
  discounts(): Client<typeof DiscountService>;
}

/** The catalog's products by id, as BatchGetProducts returned them. */
export type Catalog = Map<string, Product>;

/** Largest id list BatchGetProducts takes. */
const batchLimit = 100;

/** The products of `ids` (deduplicated), in as few BatchGetProducts calls as the batch limit allows (one for a cart). */
export async function catalogOf(pricing: Pricing, ids: Iterable<string>): Promise<Catalog> {
  const unique = [...new Set(ids)];
  const catalog: Catalog = new Map();
  for (let i = 0; i < unique.length; i += batchLimit) {
    const { products } = await pricing.products().batchGetProducts({ ids: unique.slice(i, i + batchLimit) });
    for (const p of products) catalog.set(p.id, p);
  }
  return catalog;
}

/** Why a product (and variant) cannot be put in the cart now; the AddItem error reasons. */
export type Refusal = "PRODUCT_NOT_FOUND" | "PRODUCT_UNAVAILABLE" | "VARIANT_REQUIRED" | "VARIANT_NOT_FOUND" | "CURRENCY_MISMATCH" | "OUT_OF_STOCK";

/** What the catalog says about buying one product (and variant) in a cart's currency. */
export interface Offer {
  refusal?: Refusal;
  product?: Product;
  /** Current unit price, when the product (variant) has one in the cart's currency. */
  unitPrice?: bigint;
  compareAtPrice?: bigint;
  /** Units that can be ordered now: the line maximum, limited by stock unless on backorder. 0 when refused. */
  maxQuantity: number;
  /** Units available (stock), for INSUFFICIENT_STOCK's metadata. */
  available: number;
  sku?: string;
  name?: string;
  variantName: string;
  imageUrl: string;
  categoryIds: string[];
}

export function offerOf(catalog: Catalog, productId: string, variantId: string, currency: string, lineMaximum: number): Offer {
  const product = catalog.get(productId);
  const none = { maxQuantity: 0, available: 0, variantName: "", imageUrl: "", categoryIds: [] };
  if (!product) return { ...none, refusal: "PRODUCT_NOT_FOUND" };
  const primaryImage = product.images.find((i) => i.isPrimary)?.url ?? product.images[0]?.url ?? "";
  const base = { ...none, product, name: product.name, sku: product.sku, imageUrl: primaryImage, categoryIds: [...product.categoryIds] };
  // An admin's token (GetCartById) also sees drafts and archived products: only what customers can buy counts.
  if (product.status !== ProductStatus.ACTIVE || !product.isVisible) return { ...base, refusal: "PRODUCT_UNAVAILABLE" };
  let source: { price?: Product["price"]; compareAtPrice?: Product["compareAtPrice"]; stockStatus: StockStatus; availableQuantity: number } = product;
  let variantName = "";
  if (variantId) {
    const variant = product.variants.find((v) => v.id === variantId);
    if (!variant) return { ...base, refusal: "VARIANT_NOT_FOUND" };
    source = variant;
    variantName = variant.name;
    base.sku = variant.sku;
    if (variant.imageUrl) base.imageUrl = variant.imageUrl;
  } else if (product.variants.length > 0) {
    return { ...base, refusal: "VARIANT_REQUIRED" };
  }
  const priced = source.price?.currencyCode === currency;
  const withPrice = {
    ...base,
    variantName,
    unitPrice: priced ? source.price!.amountMinor : undefined,
    compareAtPrice: priced && source.compareAtPrice?.currencyCode === currency ? source.compareAtPrice.amountMinor : undefined,
    available: Math.max(0, source.availableQuantity),
  };
  if (!priced) return { ...withPrice, refusal: "CURRENCY_MISMATCH" };
  const backorder = product.allowBackorder || source.stockStatus === StockStatus.BACKORDER;
  if (!backorder && (source.stockStatus === StockStatus.OUT_OF_STOCK || source.availableQuantity <= 0)) return { ...withPrice, refusal: "OUT_OF_STOCK" };
  return { ...withPrice, maxQuantity: backorder ? lineMaximum : Math.min(lineMaximum, source.availableQuantity) };
}

/**
 * The lines the discount engine sees: the available ones at their current
 * price, each with its categories and their ancestors. Without the category
 * tree a storefront snapshot carries the direct categories only (logged);
 * checkout fails instead.
 */
export async function discountLines(
  pricing: Pricing,
  catalog: Catalog,
  items: readonly { id: string; productId: string; variantId: string | null; quantity: number }[],
  currency: string,
  mode: PriceOptions["mode"],
): Promise<CartLine[]> {
  const lines: CartLine[] = [];
  for (const item of items) {
    const offer = offerOf(catalog, item.productId, item.variantId ?? "", currency, pricing.config.maxLineQuantity);
    if (offer.refusal) continue;
    let categoryIds = offer.categoryIds;
    if (categoryIds.length > 0) {
      try {
        categoryIds = await pricing.categories.expand(categoryIds);
      } catch (error) {
        if (mode === "checkout") throw error;
        pricing.log.warn({ err: ConnectError.from(error).rawMessage }, "category tree unavailable; discount snapshot without ancestor categories");
      }
    }
    lines.push(
      create(CartLineSchema, {
        lineId: item.id,
        productId: item.productId,
        variantId: item.variantId ?? "",
        categoryIds,
        quantity: item.quantity,
        unitPrice: money(offer.unitPrice!, currency),
      }),
    );
  }
  return lines;
}

export interface PriceOptions {
  /** checkout: a Discount failure fails the call instead of degrading. */
  mode: "storefront" | "checkout";
  /** The guest token to return in the cart (only to the guest who sent it or just received it). */
  guestToken?: string;
  /** Warnings of the operation itself (a merge's), listed first. */
  warnings?: CartWarning[];
  /** Admin views show merged_into_cart_id. */
  admin?: boolean;
}

const warning = (code: CartWarningCode, message: string, line?: ItemRecord, reason = "") =>
  create(CartWarningSchema, { code, message, reason, itemId: line?.id ?? "", productId: line?.productId ?? "", variantId: line?.variantId ?? "" });

/** The cart a caller without one sees: no id, version 0, the shop's currency, zero totals. */
export function emptyCart(config: CartServiceConfig, warnings: CartWarning[] = []): Cart {
  const zero = money(0n, config.currency);
  return create(CartSchema, { currencyCode: config.currency, subtotal: zero, discountTotal: zero, total: zero, warnings, pricedAt: timestampNow() });
}

/** The stored cart priced now: one catalog call unless `catalog` already covers it, one discount call when a line is available. */
export async function priceCart(pricing: Pricing, cart: CartRecord, items: ItemRecord[], options: PriceOptions, known?: Catalog): Promise<Cart> {
  const { config } = pricing;
  const currency = cart.currency;
  const catalog = known && items.every((i) => known.has(i.productId)) ? known : await catalogOf(pricing, items.map((i) => i.productId));
  const warnings: CartWarning[] = [...(options.warnings ?? [])];
  const lines: CartItem[] = [];
  let subtotal = 0n;
  let itemCount = 0;
  for (const item of items) {
    const offer = offerOf(catalog, item.productId, item.variantId ?? "", currency, config.maxLineQuantity);
    const available = !offer.refusal;
    const lineTotal = available ? offer.unitPrice! * BigInt(item.quantity) : 0n;
    const priceChanged = offer.unitPrice !== undefined && offer.unitPrice !== item.unitPrice;
    itemCount += item.quantity;
    if (available) subtotal += lineTotal;
    lines.push(
      create(CartItemSchema, {
        id: item.id,
        productId: item.productId,
        variantId: item.variantId ?? "",
        // Current catalog values; the stored ones when the product is gone.
        sku: offer.sku ?? item.sku,
        productName: offer.name ?? item.productName,
        variantName: offer.product ? offer.variantName : item.variantName,
        imageUrl: offer.product ? offer.imageUrl : (item.imageUrl ?? ""),
        categoryIds: offer.categoryIds,
        unitPrice: moneyOrUndefined(offer.unitPrice, currency),
        compareAtPrice: moneyOrUndefined(offer.compareAtPrice, currency),
        priceAtAdd: money(item.unitPrice, currency),
        priceChanged,
        quantity: item.quantity,
        lineTotal: money(lineTotal, currency),
        discountAmount: money(0n, currency),
        available,
        maxQuantity: offer.maxQuantity,
        createdAt: timestampOf(item.createdAt),
        updatedAt: timestampOf(item.updatedAt),
      }),
    );
    if (!available) {
      warnings.push(warning(CartWarningCode.ITEM_UNAVAILABLE, `${offer.name ?? item.productName} can no longer be bought (${offer.refusal!.toLowerCase().replace(/_/g, " ")}); remove it before checkout`, item, offer.refusal));
    } else if (item.quantity > offer.maxQuantity) {
      warnings.push(warning(CartWarningCode.INSUFFICIENT_STOCK, `only ${offer.maxQuantity} of ${offer.name} can be ordered now; lower the quantity before checkout`, item));
    }
    if (priceChanged) {
      warnings.push(warning(CartWarningCode.PRICE_CHANGED, `the price of ${offer.name ?? item.productName} changed since it was added`, item));
    }
  }

  const out = create(CartSchema, {
    id: cart.id,
    userId: cart.userId ?? "",
    guestToken: cart.userId ? "" : (options.guestToken ?? ""),
    currencyCode: currency,
    status: cartStatuses.fromDb(cart.status),
    couponCode: cart.couponCode ?? "",
    items: lines,
    subtotal: money(subtotal, currency),
    itemCount,
    version: BigInt(cart.version),
    orderId: cart.orderId ?? "",
    mergedIntoCartId: options.admin ? (cart.mergedIntoCartId ?? "") : "",
    expiresAt: timestampOf(cart.expiresAt),
    createdAt: timestampOf(cart.createdAt),
    updatedAt: timestampOf(cart.updatedAt),
    pricedAt: timestampNow(),
  });

  let discountTotal = 0n;
  const snapshot = await discountLines(pricing, catalog, items, currency, options.mode);
  // Lines show the categories the engine matched: the product's and their ancestors.
  const matched = new Map(snapshot.map((l) => [l.lineId, l.categoryIds]));
  for (const line of out.items) line.categoryIds = matched.get(line.id) ?? line.categoryIds;
  if (snapshot.length === 0) {
    // Nothing to discount: the engine is not asked, and a stored code shows why it gives nothing.
    if (cart.couponCode) warnings.push(warning(CartWarningCode.COUPON_NOT_APPLICABLE, `coupon ${cart.couponCode} applies once the cart has items it covers`, undefined, "NOT_APPLICABLE_TO_ITEMS"));
  } else {
    try {
      const answer = await pricing.discounts().calculateDiscounts({
        userId: cart.userId ?? "",
        cart: { currencyCode: currency, lines: snapshot, couponCodes: cart.couponCode ? [cart.couponCode] : [] },
      });
      const perLine = new Map<string, bigint>();
      for (const d of answer.discounts) {
        out.discounts.push(
          create(CartDiscountSchema, {
            promotionId: d.promotionId,
            couponCode: d.couponCode,
            name: d.promotionName,
            amount: money(d.freeShipping ? 0n : (d.amount?.amountMinor ?? 0n), currency),
            freeShipping: d.freeShipping,
          }),
        );
        if (d.freeShipping) out.freeShipping = true;
        else for (const a of d.allocations) perLine.set(a.lineId, (perLine.get(a.lineId) ?? 0n) + (a.amount?.amountMinor ?? 0n));
      }
      for (const line of out.items) {
        const share = perLine.get(line.id) ?? 0n;
        line.discountAmount = money(share, currency);
        discountTotal += share;
      }
      for (const r of answer.rejectedCoupons) {
        warnings.push(warning(CartWarningCode.COUPON_NOT_APPLICABLE, r.message || `coupon ${r.code} gives no discount now`, undefined, CouponRejectionReason[r.reason] ?? ""));
      }
    } catch (error) {
      const ce = ConnectError.from(error);
      if (options.mode === "checkout") {
        throw new ConnectError(`checkout needs the cart's discounts: ${ce.rawMessage}`, ce.code === Code.DeadlineExceeded ? Code.DeadlineExceeded : Code.Unavailable);
      }
      pricing.log.warn({ err: ce.rawMessage, code: Code[ce.code], cart_id: cart.id }, "discount service failed; cart priced without discounts");
      warnings.push(warning(CartWarningCode.DISCOUNTS_UNAVAILABLE, "discounts cannot be shown right now; the total will change once they are back"));
    }
  }
  if (discountTotal > subtotal) discountTotal = subtotal;
  out.discountTotal = money(discountTotal, currency);
  out.total = money(subtotal - discountTotal, currency);
  out.warnings = warnings;
  return out;
}
