/**
 * Rows to contract messages and the seed's strings to contract enums, in one
 * place. Optional text is null in the database and "" in messages. Each message
 * has one mapping function over the fields it shows (`*Fields`): written rows
 * pass their entity, hot reads pass the row they selected with the matching
 * column list (`*Columns`), so no entity is hydrated to answer a read.
 */
import { create } from "@bufbuild/protobuf";
import { PostalAddressSchema } from "../../gen/ecommerce/common/v1/address_pb.js";
import { type Address, AddressSchema, AddressType, Gender, type PaymentMethod, PaymentMethodSchema, type Preference, PreferenceSchema, type UserProfile, UserProfileSchema, type WishlistItem, WishlistItemSchema } from "../../gen/ecommerce/user/v1/user_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { cardBrands, dbEnum, paymentMethodTypes } from "../../kit/enums.ts";

export { cardBrands, paymentMethodTypes };
import { moneyOrUndefined } from "../../kit/money.ts";
import type { AddressRow, PaymentMethodRow, PreferenceRow, UserProfileRow, WishlistItemRow } from "./entities.ts";

const text = (v: string | null | undefined) => v ?? "";

/**
 * A row of an entity's table as sqlOf reads it: the entity's fields, but timestamps
 * may be text (MikroORM's type parsers keep timestamptz as text) and bigints strings.
 */
export type ReadRow<Row> = {
  [K in keyof Row]: Row[K] extends Date
    ? Date | string
    : Row[K] extends Date | null | undefined
      ? Date | string | null | undefined
      : Row[K] extends bigint | null | undefined
        ? Row[K] | string
        : Row[K];
};

/** A row of a left join whose right side may be missing: every field may be null. */
export type Nullable<Row> = { [K in keyof Row]: Row[K] | null };

/** The joined row was there (its id is not null). */
export const isPresent = <Row extends { id: string }>(row: Nullable<Row>): row is Row => row.id !== null;

/** Milliseconds of a timestamp of either form. */
const ms = (t: Date | string) => (t instanceof Date ? t.getTime() : Date.parse(t));

export type ProfileFields = ReadRow<
  Pick<
    UserProfileRow,
    | "id"
    | "userId"
    | "email"
    | "firstName"
    | "lastName"
    | "phone"
    | "avatarUrl"
    | "dateOfBirth"
    | "gender"
    | "preferredCurrency"
    | "preferredLanguage"
    | "newsletterSubscribed"
    | "marketingOptIn"
    | "isActive"
    | "emailVerified"
    | "createdAt"
    | "updatedAt"
    | "lastLoginAt"
  >
>;

/** The ProfileFields of `user_profiles p` (the date as text, as MikroORM reads it). */
export const profileColumns = `p.id, p.user_id as "userId", p.email, p.first_name as "firstName", p.last_name as "lastName", p.phone,
  p.avatar_url as "avatarUrl", p.date_of_birth::text as "dateOfBirth", p.gender, p.preferred_currency as "preferredCurrency",
  p.preferred_language as "preferredLanguage", p.newsletter_subscribed as "newsletterSubscribed", p.marketing_opt_in as "marketingOptIn",
  p.is_active as "isActive", p.email_verified as "emailVerified", p.created_at as "createdAt", p.updated_at as "updatedAt",
  p.last_login_at as "lastLoginAt"`;

export type AddressFields = ReadRow<
  Pick<
    AddressRow,
    | "id"
    | "type"
    | "isDefaultShipping"
    | "isDefaultBilling"
    | "firstName"
    | "lastName"
    | "company"
    | "addressLine1"
    | "addressLine2"
    | "city"
    | "state"
    | "postalCode"
    | "country"
    | "phone"
    | "createdAt"
    | "updatedAt"
  >
>;

/** The AddressFields of `user_addresses a`. */
export const addressColumns = `a.id, a.type, a.is_default_shipping as "isDefaultShipping", a.is_default_billing as "isDefaultBilling",
  a.first_name as "firstName", a.last_name as "lastName", a.company, a.address_line1 as "addressLine1", a.address_line2 as "addressLine2",
  a.city, a.state, a.postal_code as "postalCode", a.country, a.phone, a.created_at as "createdAt", a.updated_at as "updatedAt"`;

export type PreferenceFields = ReadRow<Pick<PreferenceRow, "key" | "value" | "createdAt" | "updatedAt">>;

/** The PreferenceFields of `user_preferences pr`. */
export const preferenceColumns = `pr.key, pr.value, pr.created_at as "createdAt", pr.updated_at as "updatedAt"`;

export type WishlistItemFields = ReadRow<
  Pick<
    WishlistItemRow,
    | "id"
    | "productId"
    | "productName"
    | "productImageUrl"
    | "productPriceMinor"
    | "productPriceCurrency"
    | "inStock"
    | "productAvailable"
    | "notes"
    | "createdAt"
    | "updatedAt"
  >
>;

export type PaymentMethodFields = ReadRow<
  Pick<
    PaymentMethodRow,
    "id" | "type" | "isDefault" | "cardType" | "last4" | "expiryMonth" | "expiryYear" | "cardholderName" | "billingAddressId" | "createdAt" | "updatedAt"
  >
>;

/** The PaymentMethodFields of `user_payment_methods m` (never the provider token). */
export const paymentMethodColumns = `m.id, m.type, m.is_default as "isDefault", m.card_type as "cardType", m.last4, m.expiry_month as "expiryMonth",
  m.expiry_year as "expiryYear", m.cardholder_name as "cardholderName", m.billing_address_id as "billingAddressId",
  m.created_at as "createdAt", m.updated_at as "updatedAt"`;

/** The WishlistItemFields of `user_wishlist_items w`. */
export const wishlistItemColumns = `w.id, w.product_id as "productId", w.product_name as "productName", w.product_image_url as "productImageUrl",
  w.product_price_minor as "productPriceMinor", w.product_price_currency as "productPriceCurrency", w.in_stock as "inStock",
  w.product_available as "productAvailable", w.notes, w.created_at as "createdAt", w.updated_at as "updatedAt"`;
export const nullIfEmpty = (v: string) => (v === "" ? null : v);

export const genders = dbEnum<Gender>([
  [Gender.FEMALE, "female"],
  [Gender.MALE, "male"],
  [Gender.DIVERSE, "diverse"],
  [Gender.PREFER_NOT_TO_SAY, "prefer_not_to_say"],
]);

export const addressTypes = dbEnum<AddressType>([
  [AddressType.SHIPPING, "shipping"],
  [AddressType.BILLING, "billing"],
  [AddressType.BOTH, "both"],
]);



/** Whether an address of this type may be the default for shipping / billing. */
export const coversShipping = (type: string) => type === "shipping" || type === "both";
export const coversBilling = (type: string) => type === "billing" || type === "both";

export function profileMessage(row: ProfileFields): UserProfile {
  return create(UserProfileSchema, {
    id: row.id,
    userId: row.userId,
    email: row.email,
    firstName: row.firstName,
    lastName: row.lastName,
    phone: text(row.phone),
    avatarUrl: text(row.avatarUrl),
    dateOfBirth: text(row.dateOfBirth),
    gender: genders.fromDbOrUnspecified(row.gender),
    preferredCurrency: text(row.preferredCurrency),
    preferredLanguage: text(row.preferredLanguage),
    newsletterSubscribed: row.newsletterSubscribed,
    marketingOptIn: row.marketingOptIn,
    isActive: row.isActive,
    emailVerified: row.emailVerified,
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
    lastLoginAt: timestampOf(row.lastLoginAt),
  });
}

export function addressMessage(row: AddressFields): Address {
  return create(AddressSchema, {
    id: row.id,
    type: addressTypes.fromDbOrUnspecified(row.type),
    postalAddress: create(PostalAddressSchema, {
      firstName: row.firstName,
      lastName: row.lastName,
      company: text(row.company),
      addressLine1: row.addressLine1,
      addressLine2: text(row.addressLine2),
      city: row.city,
      state: text(row.state),
      postalCode: text(row.postalCode),
      countryCode: row.country,
      phone: text(row.phone),
    }),
    isDefaultShipping: row.isDefaultShipping,
    isDefaultBilling: row.isDefaultBilling,
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  });
}

/** True when the card's expiry month has passed (UTC); never for PayPal. */
export function isExpired(expiryYear: number | null | undefined, expiryMonth: number | null | undefined, at = new Date()): boolean {
  if (!expiryYear || !expiryMonth) return false;
  return expiryYear * 12 + expiryMonth < at.getUTCFullYear() * 12 + (at.getUTCMonth() + 1);
}

/** Display data only: the provider token is never part of the message. */
export function paymentMethodMessage(row: PaymentMethodFields): PaymentMethod {
  return create(PaymentMethodSchema, {
    id: row.id,
    type: paymentMethodTypes.fromDbOrUnspecified(row.type),
    isDefault: row.isDefault,
    cardBrand: cardBrands.fromDbOrUnspecified(row.cardType),
    last4: text(row.last4),
    expiryMonth: row.expiryMonth ?? 0,
    expiryYear: row.expiryYear ?? 0,
    cardholderName: text(row.cardholderName),
    billingAddressId: text(row.billingAddressId),
    expired: isExpired(row.expiryYear, row.expiryMonth),
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  });
}

export function preferenceMessage(row: PreferenceFields): Preference {
  return create(PreferenceSchema, { key: row.key, value: row.value, createdAt: timestampOf(row.createdAt), updatedAt: timestampOf(row.updatedAt) });
}

export function wishlistItemMessage(row: WishlistItemFields): WishlistItem {
  return create(WishlistItemSchema, {
    id: row.id,
    productId: row.productId,
    productName: text(row.productName),
    productImageUrl: text(row.productImageUrl),
    productPrice: moneyOrUndefined(row.productPriceMinor, row.productPriceCurrency),
    // Unknown stock (no product event seen yet) reads as not in stock: never promise what we do not know.
    inStock: row.inStock ?? false,
    productAvailable: row.productAvailable,
    notes: text(row.notes),
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  });
}

/** Defaults first (shipping, then billing), then newest first: the order every address list uses. */
export function compareAddresses(a: AddressFields, b: AddressFields): number {
  const rank = (r: AddressFields) => (r.isDefaultShipping ? 0 : r.isDefaultBilling ? 1 : 2);
  return rank(a) - rank(b) || ms(b.createdAt) - ms(a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** The default first, then newest first. */
export function comparePaymentMethods(a: PaymentMethodFields, b: PaymentMethodFields): number {
  return Number(b.isDefault) - Number(a.isDefault) || ms(b.createdAt) - ms(a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}
