/**
 * The User service's tables (seed 000: user_profiles, user_addresses,
 * user_payment_methods, user_preferences, user_wishlist_items; the inbox
 * user_event_logs is created by the kit's first migration) plus the log of
 * payment token reads. Committed: never edit, add a new migration instead.
 */
import { Migration } from "@mikro-orm/migrations";

export class UserTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table user_profiles (
      id uuid primary key,
      user_id uuid not null,
      email text not null,
      first_name text not null default '',
      last_name text not null default '',
      phone text,
      avatar_url text,
      date_of_birth date,
      gender text,
      preferred_currency char(3),
      preferred_language text,
      newsletter_subscribed boolean not null default false,
      marketing_opt_in boolean not null default false,
      is_active boolean not null default true,
      email_verified boolean not null default false,
      -- occurred_at of the last user.deleted / user.reactivated applied: those
      -- two arrive on separate consumers, so the newer fact must win.
      active_synced_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      last_login_at timestamptz,
      constraint user_profiles_user_id_unique unique (user_id),
      constraint user_profiles_email_unique unique (email),
      constraint user_profiles_gender_check check (gender in ('female', 'male', 'diverse', 'prefer_not_to_say'))
    )`);
    // Keyset paging of ListProfiles for each order_by.
    this.addSql("create index user_profiles_created on user_profiles (created_at, id)");
    this.addSql("create index user_profiles_last_name on user_profiles (last_name, id)");
    this.addSql("create index user_profiles_last_login on user_profiles ((coalesce(last_login_at, '-infinity'::timestamptz)), id)");

    this.addSql(`create table user_addresses (
      id uuid primary key,
      user_id uuid not null references user_profiles (user_id) on delete cascade,
      type text not null,
      is_default_shipping boolean not null default false,
      is_default_billing boolean not null default false,
      -- The seed's single flag, kept as a derived column for readers of the seed schema.
      is_default boolean generated always as (is_default_shipping or is_default_billing) stored,
      first_name text not null,
      last_name text not null,
      company text,
      address_line1 text not null,
      address_line2 text,
      city text not null,
      state text,
      postal_code text,
      country char(2) not null,
      phone text,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint user_addresses_type_check check (type in ('shipping', 'billing', 'both')),
      constraint user_addresses_default_shipping_type check (not is_default_shipping or type in ('shipping', 'both')),
      constraint user_addresses_default_billing_type check (not is_default_billing or type in ('billing', 'both'))
    )`);
    this.addSql("create index user_addresses_user on user_addresses (user_id, created_at desc)");
    // At most one default per purpose and user, whatever the code does.
    this.addSql("create unique index user_addresses_one_default_shipping on user_addresses (user_id) where is_default_shipping");
    this.addSql("create unique index user_addresses_one_default_billing on user_addresses (user_id) where is_default_billing");

    this.addSql(`create table user_payment_methods (
      id uuid primary key,
      user_id uuid not null references user_profiles (user_id) on delete cascade,
      type text not null,
      is_default boolean not null default false,
      card_type text,
      last4 char(4),
      expiry_month smallint,
      expiry_year smallint,
      cardholder_name text,
      -- restrict: DeleteAddress refuses (ADDRESS_IN_USE) while a method uses it.
      billing_address_id uuid references user_addresses (id) on delete restrict,
      -- AES-256-GCM: nonce || tag || ciphertext; never the token in clear.
      provider_token bytea not null,
      provider_token_key_id text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint user_payment_methods_type_check check (type in ('credit_card', 'debit_card', 'paypal')),
      constraint user_payment_methods_card_type_check check (
        card_type in ('visa', 'mastercard', 'amex', 'discover', 'diners', 'jcb', 'unionpay', 'maestro', 'other')),
      constraint user_payment_methods_expiry_month_check check (expiry_month between 1 and 12),
      constraint user_payment_methods_card_fields check (
        (type = 'paypal' and card_type is null and last4 is null and expiry_month is null and expiry_year is null)
        or (type <> 'paypal' and card_type is not null and last4 is not null and expiry_month is not null and expiry_year is not null))
    )`);
    this.addSql("create index user_payment_methods_user on user_payment_methods (user_id, created_at desc)");
    this.addSql("create index user_payment_methods_billing_address on user_payment_methods (billing_address_id) where billing_address_id is not null");
    this.addSql("create unique index user_payment_methods_one_default on user_payment_methods (user_id) where is_default");

    this.addSql(`create table user_preferences (
      id uuid primary key,
      user_id uuid not null references user_profiles (user_id) on delete cascade,
      key text not null,
      value text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint user_preferences_user_key_unique unique (user_id, key)
    )`);

    this.addSql(`create table user_wishlist_items (
      id uuid primary key,
      user_id uuid not null references user_profiles (user_id) on delete cascade,
      product_id uuid not null,
      -- Snapshot of the product, kept current from the catalog's product events.
      product_name text,
      product_image_url text,
      product_price_minor bigint,
      product_price_currency char(3),
      in_stock boolean,
      product_available boolean not null default true,
      notes text,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint user_wishlist_items_user_product_unique unique (user_id, product_id),
      constraint user_wishlist_items_price_pair check ((product_price_minor is null) = (product_price_currency is null))
    )`);
    this.addSql("create index user_wishlist_items_user_created on user_wishlist_items (user_id, created_at desc, id desc)");
    // Product events update every list holding the product.
    this.addSql("create index user_wishlist_items_product on user_wishlist_items (product_id)");

    // One row per GetPaymentMethodToken call, granted or refused (never the token).
    this.addSql(`create table user_payment_token_accesses (
      id uuid primary key,
      caller text not null,
      user_id uuid not null,
      payment_method_id uuid not null,
      outcome text not null,
      accessed_at timestamptz not null default now(),
      constraint user_payment_token_accesses_outcome_check check (outcome in ('granted', 'denied', 'not_found', 'card_expired'))
    )`);
    this.addSql("create index user_payment_token_accesses_method on user_payment_token_accesses (payment_method_id, accessed_at desc)");
    this.addSql("create index user_payment_token_accesses_user on user_payment_token_accesses (user_id, accessed_at desc)");
  }
}
