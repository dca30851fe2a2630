/**
 * Prices a checkout exactly as PlaceOrder charges it, with no side effects
 * (PreviewOrder is this and nothing else):
 *   the address (User's GetAddress, or the one entered) -> the cart
 *   (Cart's GetCartForCheckout: repriced from the catalog, with warnings) ->
 *   catalog prices and weights (Product's BatchGetProducts; the catalog's price
 *   wins over the cart's) -> the shipping rate (Shipping's QuoteShippingRate)
 *   -> promotions and the coupon (Discount's CalculateDiscounts, with the
 *   shipping price, so free shipping is counted) -> tax (config's table).
 *
 * Tax, in integer minor units: each line is taxed on its total less the
 * discount allocated to it, and shipping on its price less the shipping
 * discount, at the destination's rate (basis points), each amount rounded
 * half up on its own; tax_amount is the sum. Catalog prices are net of tax.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Cart, CartService, CartWarningCode } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import type { PostalAddress } from "../../gen/ecommerce/common/v1/address_pb.js";
import { type CartSnapshotSchema, CouponRejectionReason, DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { type OrderDiscountSchema, OrderPreviewSchema, type OrderShippingMethodSchema } from "../../gen/ecommerce/order/v1/order_pb.js";
import { type BatchGetProductsResponse, ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import type { PeerClients } from "../../kit/clients.ts";
import { domainError, errorReason, failedPrecondition } from "../../kit/errors.ts";
import { money } from "../../kit/money.ts";
import { type OrderConfig, taxRateOf } from "./config.ts";

export interface PricedLine {
  cartItemId: string;
  productId: string;
  variantId: string;
  productName: string;
  variantName: string;
  sku: string;
  imageUrl: string;
  unitPrice: bigint;
  quantity: number;
  total: bigint;
  discount: bigint;
  tax: bigint;
}

export interface Pricing {
  cartId: string;
  cartVersion: bigint;
  currency: string;
  address: PostalAddress;
  lines: PricedLine[];
  subtotal: bigint;
  discountTotal: bigint;
  shipping: bigint;
  tax: bigint;
  total: bigint;
  discounts: MessageInitShape<typeof OrderDiscountSchema>[];
  shippingMethod: MessageInitShape<typeof OrderShippingMethodSchema>;
  estimatedDelivery: Timestamp | undefined;
  /** What RedeemDiscounts is given: the same snapshot CalculateDiscounts priced. */
  snapshot: MessageInitShape<typeof CartSnapshotSchema>;
  couponCodes: string[];
}

export type Destination = { case: "shippingAddressId"; value: string } | { case: "shippingAddress"; value: PostalAddress } | { case: undefined; value?: undefined };

/** A peer's failure as the checkout reports it: contract reasons pass, a peer that does not answer is DEPENDENCY_UNAVAILABLE. */
export function peerFailure(service: string, error: unknown): ConnectError {
  const e = ConnectError.from(error);
  if (e.code === Code.Unavailable || e.code === Code.DeadlineExceeded || e.code === Code.Canceled || e.code === Code.Unknown || e.code === Code.Internal) {
    return domainError(Code.Unavailable, `the ${service} service did not answer in time; retry with the same idempotency key`, {
      reason: "DEPENDENCY_UNAVAILABLE",
      metadata: { service },
      retryAfterMs: 1000,
    });
  }
  return e;
}


export async function resolveAddress(peers: PeerClients, userId: string, destination: Destination, field: string): Promise<PostalAddress | undefined> {
  if (destination.case === "shippingAddress") return destination.value;
  if (destination.case !== "shippingAddressId") return undefined;
  try {
    const { address } = await peers.client(UserService).getAddress({ userId, addressId: destination.value });
    return address!.postalAddress!;
  } catch (error) {
    const e = ConnectError.from(error);
    if (e.code === Code.NotFound) {
      throw domainError(Code.NotFound, `address ${destination.value} is not one of your saved addresses`, { reason: "ADDRESS_NOT_FOUND", field });
    }
    throw peerFailure("user", e);
  }
}

async function cartOf(peers: PeerClients, userId: string, cartId: string): Promise<Cart> {
  try {
    return (await peers.client(CartService).getCartForCheckout({ cartId, userId })).cart!;
  } catch (error) {
    const e = ConnectError.from(error);
    const reason = errorReason(e);
    if (e.code === Code.NotFound || reason === "CART_NOT_ACTIVE") {
      throw domainError(Code.NotFound, `cart ${cartId} is not your active cart`, { reason: "CART_NOT_FOUND", resource: { type: "cart", name: cartId } });
    }
    if (reason === "CART_EMPTY") throw failedPrecondition("the cart has no items", "CART_EMPTY");
    throw peerFailure("cart", e);
  }
}

const rejection = (r: CouponRejectionReason) => `COUPON_${(CouponRejectionReason[r] ?? "UNSPECIFIED").replace(/^COUPON_/, "")}`;

export function roundBps(amount: bigint, bps: number): bigint {
  if (amount <= 0n) return 0n;
  return (amount * BigInt(bps) + 5_000n) / 10_000n;
}

export async function priceCheckout(
  peers: PeerClients,
  config: OrderConfig,
  userId: string,
  req: { cartId: string; destination: Destination; shippingMethodId: string },
  isFirstOrder: boolean,
): Promise<Pricing> {
  const address = (await resolveAddress(peers, userId, req.destination, "shipping_address_id"))!;
  const cart = await cartOf(peers, userId, req.cartId);
  if (cart.items.length === 0) throw failedPrecondition("the cart has no items", "CART_EMPTY");
  const indexOf = (itemId: string) => cart.items.findIndex((i) => i.id === itemId);
  for (const w of cart.warnings) {
    const i = indexOf(w.itemId);
    const item = cart.items[i];
    // A line with no stock left at all is unavailable to the cart, but to the customer it is sold out.
    if (w.code === CartWarningCode.ITEM_UNAVAILABLE && w.reason === "OUT_OF_STOCK") {
      throw domainError(Code.FailedPrecondition, `${item?.productName ?? "a product"} is sold out; remove it from the cart`, {
        reason: "OUT_OF_STOCK",
        field: `items[${i}].quantity`,
        metadata: { product_id: w.productId, variant_id: w.variantId, requested: String(item?.quantity ?? 0), available: "0" },
      });
    }
    if (w.code === CartWarningCode.ITEM_UNAVAILABLE) {
      throw domainError(Code.FailedPrecondition, `${item?.productName ?? "a product"} can no longer be bought; remove it from the cart`, {
        reason: "PRODUCT_UNAVAILABLE",
        field: `items[${i}]`,
        metadata: { product_id: w.productId, variant_id: w.variantId },
      });
    }
    if (w.code === CartWarningCode.INSUFFICIENT_STOCK) {
      throw domainError(Code.FailedPrecondition, `only ${item?.maxQuantity ?? 0} of ${item?.productName ?? "a product"} are available`, {
        reason: "OUT_OF_STOCK",
        metadata: { product_id: w.productId, variant_id: w.variantId, requested: String(item?.quantity ?? 0), available: String(item?.maxQuantity ?? 0) },
      });
    }
    if (w.code === CartWarningCode.COUPON_NOT_APPLICABLE) {
      throw domainError(Code.FailedPrecondition, `the coupon ${cart.couponCode} no longer applies`, {
        reason: "COUPON_INVALID",
        metadata: { code: cart.couponCode, cause: `COUPON_${w.reason.replace(/^COUPON_/, "")}` },
      });
    }
  }
  const currency = cart.currencyCode;

  // Catalog prices and weights.
  let catalog: BatchGetProductsResponse;
  try {
    catalog = await peers.client(ProductService).batchGetProducts({ ids: [...new Set(cart.items.map((i) => i.productId))] });
  } catch (error) {
    throw peerFailure("product", error);
  }
  const weights: number[] = [];
  const lines: PricedLine[] = cart.items.map((item, i) => {
    const product = catalog.products.find((p) => p.id === item.productId);
    const variant = item.variantId ? product?.variants.find((v) => v.id === item.variantId) : undefined;
    const price = variant?.price ?? product?.price;
    if (!product || (item.variantId && !variant) || !price || price.currencyCode !== currency) {
      throw domainError(Code.FailedPrecondition, `${item.productName} can no longer be bought; remove it from the cart`, {
        reason: "PRODUCT_UNAVAILABLE",
        field: `items[${i}]`,
        metadata: { product_id: item.productId, variant_id: item.variantId },
      });
    }
    weights.push(product.weightGrams || 0);
    const unitPrice = price.amountMinor;
    return {
      cartItemId: item.id,
      productId: item.productId,
      variantId: item.variantId,
      productName: product.name,
      variantName: variant?.name ?? item.variantName,
      sku: variant?.sku || product.sku,
      imageUrl: variant?.imageUrl || product.images[0]?.url || item.imageUrl,
      unitPrice,
      quantity: item.quantity,
      total: unitPrice * BigInt(item.quantity),
      discount: 0n,
      tax: 0n,
    };
  });
  const subtotal = lines.reduce((s, l) => s + l.total, 0n);

  // Shipping.
  let quote;
  try {
    quote = await peers.client(ShippingService).quoteShippingRate({
      methodId: req.shippingMethodId,
      shipTo: address,
      items: lines.map((l, i) => ({ productId: l.productId, variantId: l.variantId, quantity: l.quantity, weightGrams: weights[i] })),
      subtotal: money(subtotal, currency),
    });
  } catch (error) {
    const e = ConnectError.from(error);
    if (e.code === Code.NotFound) throw domainError(Code.NotFound, `shipping method ${req.shippingMethodId} does not exist`, { reason: "SHIPPING_METHOD_NOT_FOUND", field: "shipping_method_id" });
    if (e.code === Code.FailedPrecondition) throw failedPrecondition(e.rawMessage, "SHIPPING_UNAVAILABLE");
    throw peerFailure("shipping", e);
  }
  const q = quote.quote!;
  const shipping = q.price?.amountMinor ?? 0n;

  // Discounts.
  const couponCodes = cart.couponCode ? [cart.couponCode] : [];
  const categoryOf = (id: string) => cart.items.find((i) => i.id === id)?.categoryIds ?? [];
  const snapshot: MessageInitShape<typeof CartSnapshotSchema> = {
    currencyCode: currency,
    lines: lines.map((l) => ({ lineId: l.cartItemId, productId: l.productId, variantId: l.variantId, categoryIds: categoryOf(l.cartItemId), quantity: l.quantity, unitPrice: money(l.unitPrice, currency) })),
    shippingAmount: money(shipping, currency),
    couponCodes,
    isFirstOrder,
  };
  let calc;
  try {
    calc = await peers.client(DiscountService).calculateDiscounts({ userId, cart: snapshot });
  } catch (error) {
    throw peerFailure("discount", error);
  }
  const rejected = calc.rejectedCoupons[0];
  if (rejected) {
    throw domainError(Code.FailedPrecondition, rejected.message || `the coupon ${rejected.code} does not apply`, {
      reason: "COUPON_INVALID",
      metadata: { code: rejected.code, cause: rejection(rejected.reason) },
    });
  }
  for (const d of calc.discounts) {
    for (const a of d.allocations) {
      const line = lines.find((l) => l.cartItemId === a.lineId);
      if (line) line.discount += a.amount?.amountMinor ?? 0n;
    }
  }
  const discountTotal = calc.totalDiscount?.amountMinor ?? 0n;
  const shippingDiscount = calc.shippingDiscountTotal?.amountMinor ?? 0n;

  // Tax.
  const bps = taxRateOf(config.taxRules, address.countryCode, address.state);
  for (const l of lines) l.tax = roundBps(l.total - l.discount, bps);
  const tax = lines.reduce((s, l) => s + l.tax, 0n) + roundBps(shipping - shippingDiscount, bps);
  const total = subtotal - discountTotal + shipping + tax;

  return {
    cartId: cart.id,
    cartVersion: cart.version,
    currency,
    address,
    lines,
    subtotal,
    discountTotal,
    shipping,
    tax,
    total,
    discounts: calc.discounts.map((d) => ({
      promotionId: d.promotionId,
      couponCode: d.couponCode.toUpperCase(),
      name: d.promotionName,
      amount: d.amount,
      appliesToShipping: d.freeShipping,
    })),
    shippingMethod: { id: q.methodId, name: q.methodName, carrierName: q.carrierName, minDays: q.minDays, maxDays: q.maxDays },
    estimatedDelivery: q.estimatedDeliveryLatest,
    snapshot,
    couponCodes,
  };
}

export function previewOf(p: Pricing) {
  const m = (v: bigint) => money(v, p.currency);
  return create(OrderPreviewSchema, {
    items: p.lines.map((l) => ({
      productId: l.productId,
      variantId: l.variantId,
      productName: l.productName,
      variantName: l.variantName,
      productSku: l.sku,
      productImageUrl: l.imageUrl,
      unitPrice: m(l.unitPrice),
      quantity: l.quantity,
      totalPrice: m(l.total),
      discountAmount: m(l.discount),
      taxAmount: m(l.tax),
    })),
    subtotal: m(p.subtotal),
    discountAmount: m(p.discountTotal),
    shippingAmount: m(p.shipping),
    taxAmount: m(p.tax),
    totalAmount: m(p.total),
    currencyCode: p.currency,
    discounts: p.discounts,
    shippingMethod: p.shippingMethod,
    estimatedDeliveryDate: p.estimatedDelivery,
  });
}
