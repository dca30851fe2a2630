/**
 * The Order service's tables (order_db): orders, order_items,
 * order_status_history, order_notes and order_checkout_steps (the checkout
 * saga's log: one row per step and order, its intent and outcome written in
 * the same transaction as the order's change). Committed: never edit, add a
 * new migration instead.
 */
import { Migration } from "@mikro-orm/migrations";

const statuses = "'pending', 'confirmed', 'processing', 'shipped', 'delivered', 'cancelled', 'refunded', 'payment_failed'";
const paymentStatuses = "'pending', 'authorized', 'paid', 'failed', 'voided', 'partially_refunded', 'refunded'";

export class OrderTables extends Migration {
  override async up(): Promise<void> {
    this.addSql("create sequence order_number_seq");
    this.addSql(`create table orders (
      id uuid primary key,
      order_number text not null unique,
      user_id uuid not null,
      cart_id uuid not null,
      status text not null check (status in (${statuses})),
      payment_status text not null check (payment_status in (${paymentStatuses})),
      -- The checkout saga: running (a PlaceOrder or the recovery job drives it), done, failed (compensated).
      checkout text not null check (checkout in ('running', 'done', 'failed')),
      -- order.created was published: the customer sees the order (PAYMENT_FAILED orders are shown too).
      announced boolean not null default false,
      idempotency_key text not null,
      request_hash text not null,
      currency char(3),
      subtotal_minor bigint not null default 0,
      discount_minor bigint not null default 0,
      shipping_minor bigint not null default 0,
      tax_minor bigint not null default 0,
      total_minor bigint not null default 0 check (total_minor >= 0),
      captured_minor bigint not null default 0,
      refunded_minor bigint not null default 0,
      discounts jsonb not null default '[]',
      shipping_address jsonb,
      billing_address jsonb,
      shipping_method jsonb,
      -- How to pay: a saved payment method id, or only the provider of a one-time token (never the token).
      payment_source jsonb,
      payment_id uuid,
      payment_method jsonb,
      shipment_id uuid,
      carrier text,
      tracking_number text,
      tracking_url text,
      estimated_delivery_date timestamptz,
      shipped_at timestamptz,
      delivered_at timestamptz,
      cancelled_at timestamptz,
      cancellation_reason text,
      metadata jsonb not null default '{}',
      -- The checkout's contract error (code, reason, message, metadata), replayed for the same key.
      failure jsonb,
      stock_committed boolean not null default false,
      version int not null default 1,
      lease_until timestamptz,
      last_payment_update_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint orders_idempotency_key unique (user_id, idempotency_key)
    )`);
    // One running checkout per cart: a second one is ABORTED CHECKOUT_IN_PROGRESS.
    this.addSql("create unique index orders_cart_checkout_running on orders (cart_id) where checkout = 'running'");
    this.addSql("create index orders_user_created on orders (user_id, created_at desc, id desc)");
    this.addSql("create index orders_created on orders (created_at desc, id desc)");
    this.addSql("create index orders_updated on orders (updated_at desc, id desc)");
    this.addSql("create index orders_total on orders (total_minor desc, id desc)");
    this.addSql("create index orders_checkout_lease on orders (lease_until) where checkout = 'running'");
    this.addSql("create index orders_payment on orders (payment_id) where payment_id is not null");
    this.addSql(`create table order_items (
      id uuid primary key,
      order_id uuid not null references orders (id) deferrable initially deferred,
      position int not null,
      cart_item_id text not null,
      product_id uuid not null,
      variant_id uuid,
      product_name text not null,
      variant_name text,
      product_sku text not null,
      product_image_url text,
      unit_price_minor bigint not null check (unit_price_minor >= 0),
      quantity int not null check (quantity > 0),
      total_minor bigint not null,
      discount_minor bigint not null default 0,
      tax_minor bigint not null default 0,
      created_at timestamptz not null default now(),
      unique (order_id, position)
    )`);
    // CheckVerifiedPurchase and ListOrders' product filter.
    this.addSql("create index order_items_product on order_items (product_id, order_id)");
    this.addSql(`create table order_status_history (
      id uuid primary key,
      order_id uuid not null references orders (id) deferrable initially deferred,
      status text not null check (status in (${statuses})),
      previous_status text check (previous_status in (${statuses})),
      actor_type text not null check (actor_type in ('customer', 'admin', 'system')),
      changed_by text not null,
      reason text not null,
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index order_status_history_order on order_status_history (order_id, created_at, id)");
    this.addSql(`create table order_notes (
      id uuid primary key,
      order_id uuid not null references orders (id) deferrable initially deferred,
      note text not null,
      is_internal boolean not null,
      author_type text not null check (author_type in ('customer', 'admin', 'system')),
      created_by text not null,
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index order_notes_order on order_notes (order_id, created_at, id)");
    this.addSql(`create table order_checkout_steps (
      order_id uuid not null references orders (id) deferrable initially deferred,
      step text not null,
      state text not null check (state in ('started', 'done', 'failed', 'compensated')),
      detail jsonb not null default '{}',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (order_id, step)
    )`);
  }
}
