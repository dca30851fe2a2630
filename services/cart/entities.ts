/**
 * MikroORM entities of the Cart service (tables in migrations/0001_cart_tables.ts).
 * Optional text is null in the database and "" in the contract; money is bigint
 * minor units in the cart's currency.
 */
import type { InferEntity } from "@mikro-orm/core";
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const CartEntity = defineEntity({
  name: "Cart",
  tableName: "carts",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid().nullable(),
    /** SHA-256 (hex) of the guest token; null for user carts and after a merge. */
    guestTokenHash: p.text().nullable(),
    currency: p.string().columnType("char(3)"),
    /** active | converted | abandoned | merged */
    status: p.text().default("active"),
    couponCode: p.text().nullable(),
    expiresAt: p.datetime(),
    version: p.bigint("number").default(1),
    orderId: p.uuid().nullable(),
    mergedIntoCartId: p.uuid().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type CartRow = InferEntity<typeof CartEntity>;

export const CartItemEntity = defineEntity({
  name: "CartItem",
  tableName: "cart_items",
  properties: {
    id: p.uuid().primary(),
    cartId: p.uuid(),
    productId: p.uuid(),
    variantId: p.uuid().nullable(),
    sku: p.text(),
    productName: p.text(),
    variantName: p.text().default(""),
    imageUrl: p.text().nullable(),
    /** The price at add (contract: price_at_add). */
    unitPrice: p.bigint("bigint"),
    quantity: p.integer(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type CartItemRow = InferEntity<typeof CartItemEntity>;

export const cartEntities = [CartEntity, CartItemEntity];
