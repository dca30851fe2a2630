/**
 * The Cart service's tables (ARCHITECTURE.md, cart_db: carts, cart_items; the
 * inbox and outbox come from the kit's migrations). Committed: never edit, add
 * a new migration instead.
 *
 * The guest token is never stored: guest_token_hash holds its SHA-256 (hex),
 * so a leaked database gives no working cart credential.
 */
import { Migration } from "@mikro-orm/migrations";

export class CartTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table carts (
      id uuid primary key,
      user_id uuid,
      guest_token_hash text,
      currency char(3) not null,
      status text not null default 'active',
      coupon_code text,
      expires_at timestamptz not null,
      version bigint not null default 1,
      order_id uuid,
      merged_into_cart_id uuid references carts (id) on delete set null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint carts_status_check check (status in ('active', 'converted', 'abandoned', 'merged')),
      constraint carts_owner_check check (user_id is not null or guest_token_hash is not null or status <> 'active'),
      constraint carts_guest_token_unique unique (guest_token_hash)
    )`);
    // At most one current cart per user, whatever the code does (expired ones are purged first).
    this.addSql("create unique index carts_one_current_per_user on carts (user_id) where status in ('active', 'abandoned')");
    // The sweeper: abandonment candidates and expired carts.
    this.addSql("create index carts_active_updated on carts (updated_at) where status = 'active' and user_id is not null");
    this.addSql("create index carts_expires on carts (expires_at) where status in ('active', 'abandoned', 'merged')");
    // Keyset paging of ListCarts.
    this.addSql("create index carts_updated on carts (updated_at, id)");
    this.addSql("create index carts_created on carts (created_at, id)");
    this.addSql("create index carts_user on carts (user_id, updated_at)");

    this.addSql(`create table cart_items (
      id uuid primary key,
      cart_id uuid not null references carts (id) on delete cascade,
      product_id uuid not null,
      variant_id uuid,
      sku text not null,
      product_name text not null,
      variant_name text not null default '',
      image_url text,
      -- Unit price (minor units, cart currency) when the line was added or last changed by the customer.
      unit_price bigint not null,
      quantity integer not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint cart_items_quantity_check check (quantity between 1 and 99),
      constraint cart_items_unit_price_check check (unit_price >= 0),
      constraint cart_items_line_unique unique nulls not distinct (cart_id, product_id, variant_id)
    )`);
  }
}
