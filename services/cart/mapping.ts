/**
 * The database's strings to contract enums, and stored rows to the admin
 * summary, in one place. Optional text is null in the database and "" in messages.
 */
import { create } from "@bufbuild/protobuf";
import { type CartSummary, CartSummarySchema, CartStatus } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { dbEnum } from "../../kit/enums.ts";
import { money } from "../../kit/money.ts";
import type { CartRecord } from "./store.ts";

export const cartStatuses = dbEnum<CartStatus>([
  [CartStatus.ACTIVE, "active"],
  [CartStatus.CONVERTED, "converted"],
  [CartStatus.ABANDONED, "abandoned"],
  [CartStatus.MERGED, "merged"],
]);

export interface SummaryTotals {
  lineCount: number;
  itemCount: number;
  storedSubtotal: bigint;
}

export function summaryMessage(cart: CartRecord, totals: SummaryTotals): CartSummary {
  return create(CartSummarySchema, {
    id: cart.id,
    userId: cart.userId ?? "",
    currencyCode: cart.currency,
    status: cartStatuses.fromDb(cart.status),
    couponCode: cart.couponCode ?? "",
    lineCount: totals.lineCount,
    itemCount: totals.itemCount,
    storedSubtotal: money(totals.storedSubtotal, cart.currency),
    version: BigInt(cart.version),
    orderId: cart.orderId ?? "",
    mergedIntoCartId: cart.mergedIntoCartId ?? "",
    expiresAt: timestampOf(cart.expiresAt),
    createdAt: timestampOf(cart.createdAt),
    updatedAt: timestampOf(cart.updatedAt),
  });
}
