/**
 * MikroORM entities of the User service (tables in migrations/0001_user_tables.ts,
 * wishlist snapshot times in 0002).
 * Optional text is null in the database and "" in the contract.
 */
import type { InferEntity } from "@mikro-orm/core";
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const UserProfileEntity = defineEntity({
  name: "UserProfile",
  tableName: "user_profiles",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid().unique(),
    email: p.text(),
    firstName: p.text().default(""),
    lastName: p.text().default(""),
    phone: p.text().nullable(),
    avatarUrl: p.text().nullable(),
    /** "YYYY-MM-DD". */
    dateOfBirth: p.date().nullable(),
    gender: p.text().nullable(),
    preferredCurrency: p.string().columnType("char(3)").nullable(),
    preferredLanguage: p.text().nullable(),
    newsletterSubscribed: p.boolean().default(false),
    marketingOptIn: p.boolean().default(false),
    isActive: p.boolean().default(true),
    emailVerified: p.boolean().default(false),
    activeSyncedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
    lastLoginAt: p.datetime().nullable(),
  },
});
export type UserProfileRow = InferEntity<typeof UserProfileEntity>;

export const AddressEntity = defineEntity({
  name: "UserAddress",
  tableName: "user_addresses",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    /** shipping | billing | both */
    type: p.text(),
    isDefaultShipping: p.boolean().default(false),
    isDefaultBilling: p.boolean().default(false),
    firstName: p.text(),
    lastName: p.text(),
    company: p.text().nullable(),
    addressLine1: p.text().fieldName("address_line1"),
    addressLine2: p.text().fieldName("address_line2").nullable(),
    city: p.text(),
    state: p.text().nullable(),
    postalCode: p.text().nullable(),
    country: p.string().columnType("char(2)"),
    phone: p.text().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type AddressRow = InferEntity<typeof AddressEntity>;

export const PaymentMethodEntity = defineEntity({
  name: "UserPaymentMethod",
  tableName: "user_payment_methods",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    /** credit_card | debit_card | paypal */
    type: p.text(),
    isDefault: p.boolean().default(false),
    /** The card network (contract: card_brand); null for PayPal. */
    cardType: p.text().nullable(),
    last4: p.string().columnType("char(4)").nullable(),
    expiryMonth: p.smallint().nullable(),
    expiryYear: p.smallint().nullable(),
    cardholderName: p.text().nullable(),
    billingAddressId: p.uuid().nullable(),
    /** Encrypted (token-cipher.ts); hidden from serialization so it never leaks into a log. */
    providerToken: p.blob().hidden(),
    providerTokenKeyId: p.text(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type PaymentMethodRow = InferEntity<typeof PaymentMethodEntity>;

export const PreferenceEntity = defineEntity({
  name: "UserPreference",
  tableName: "user_preferences",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    key: p.text(),
    value: p.text(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type PreferenceRow = InferEntity<typeof PreferenceEntity>;

export const WishlistItemEntity = defineEntity({
  name: "UserWishlistItem",
  tableName: "user_wishlist_items",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    productId: p.uuid(),
    productName: p.text().nullable(),
    productImageUrl: p.text().nullable(),
    productPriceMinor: p.bigint("bigint").nullable(),
    productPriceCurrency: p.string().columnType("char(3)").nullable(),
    /** Null while unknown (no stock event seen yet). */
    inStock: p.boolean().nullable(),
    productAvailable: p.boolean().default(true),
    /** The catalog's time of name, image, price and availability: older product events are ignored. */
    snapshotAt: p.datetime().nullable(),
    /** The catalog's time of inStock. */
    stockAt: p.datetime().nullable(),
    notes: p.text().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type WishlistItemRow = InferEntity<typeof WishlistItemEntity>;

export const PaymentTokenAccessEntity = defineEntity({
  name: "UserPaymentTokenAccess",
  tableName: "user_payment_token_accesses",
  properties: {
    id: p.uuid().primary(),
    /** The calling service, e.g. "payment", or "user:<id>" for a user token. */
    caller: p.text(),
    userId: p.uuid(),
    paymentMethodId: p.uuid(),
    /** granted | denied | not_found | card_expired */
    outcome: p.text(),
    accessedAt: p.datetime().onCreate(now),
  },
});

export const userEntities = [UserProfileEntity, AddressEntity, PaymentMethodEntity, PreferenceEntity, WishlistItemEntity, PaymentTokenAccessEntity];
