/**
 * The Shipping service's tables (ARCHITECTURE.md shipping_db: carriers,
 * shipping_methods, shipping_rates, shipments, shipment_items,
 * tracking_events). Weights carry their unit in the name (grams) and money is
 * bigint minor units with the rate's one currency, so the CHECKs can hold the
 * contract's rules (a non-empty weight band, free_above positive) even for a
 * bug. Committed: never edit, add a new migration instead.
 */
import { Migration } from "@mikro-orm/migrations";

export class ShippingTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table carriers (
      id uuid primary key,
      code text not null,
      name text not null,
      tracking_url_template text not null default '',
      is_active boolean not null default false,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint carriers_code_unique unique (code)
    )`);

    this.addSql(`create table shipping_methods (
      id uuid primary key,
      carrier_id uuid not null references carriers (id),
      code text not null,
      name text not null,
      description text not null default '',
      min_days integer not null,
      max_days integer not null,
      is_active boolean not null default false,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint shipping_methods_code_unique unique (carrier_id, code),
      constraint shipping_methods_days_check check (min_days >= 0 and max_days >= min_days)
    )`);

    this.addSql(`create table shipping_rates (
      id uuid primary key,
      method_id uuid not null references shipping_methods (id),
      -- ISO 3166-1 alpha-2 codes; empty: every country.
      countries text[] not null default '{}',
      min_weight_grams integer not null default 0,
      -- Exclusive; null: no upper limit.
      max_weight_grams integer,
      min_subtotal_minor bigint,
      price_minor bigint not null,
      currency char(3) not null,
      free_above_minor bigint,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint shipping_rates_band_check check (min_weight_grams >= 0 and (max_weight_grams is null or max_weight_grams > min_weight_grams)),
      constraint shipping_rates_amounts_check check (price_minor >= 0 and (min_subtotal_minor is null or min_subtotal_minor >= 0) and (free_above_minor is null or free_above_minor > 0))
    )`);
    // Every quote reads the rates of the live methods in one currency.
    this.addSql("create index shipping_rates_method on shipping_rates (method_id, currency)");

    this.addSql(`create table shipments (
      id uuid primary key,
      order_id uuid not null,
      user_id uuid not null,
      carrier_id uuid not null references carriers (id),
      method_id uuid not null references shipping_methods (id),
      tracking_number text not null,
      status text not null,
      -- The recipient and address as a JSON snapshot of common.v1.PostalAddress.
      ship_to jsonb not null,
      weight_grams integer not null,
      cost_minor bigint,
      cost_currency char(3),
      estimated_delivery timestamptz,
      shipped_at timestamptz,
      delivered_at timestamptz,
      -- occurred_at of the tracking event the status comes from: an older event reported later does not move it.
      status_occurred_at timestamptz,
      idempotency_key text not null,
      request_hash text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint shipments_tracking_number_unique unique (tracking_number),
      constraint shipments_idempotency_key_unique unique (idempotency_key),
      constraint shipments_status_check check (status in ('pending', 'label_created', 'in_transit', 'out_for_delivery', 'delivered', 'exception', 'returned'))
    )`);
    this.addSql("create index shipments_order on shipments (order_id, created_at, id)");
    this.addSql("create index shipments_created on shipments (created_at desc, id desc)");

    this.addSql(`create table shipment_items (
      id uuid primary key,
      shipment_id uuid not null references shipments (id) on delete cascade,
      order_item_id uuid not null,
      quantity integer not null,
      constraint shipment_items_quantity_check check (quantity > 0),
      constraint shipment_items_once unique (shipment_id, order_item_id)
    )`);
    this.addSql("create index shipment_items_order_item on shipment_items (order_item_id)");

    this.addSql(`create table tracking_events (
      id uuid primary key,
      shipment_id uuid not null references shipments (id) on delete cascade,
      status text not null,
      location text not null default '',
      description text not null,
      occurred_at timestamptz not null,
      -- The carrier's event id (webhooks); null for events recorded by staff.
      carrier_event_id text,
      created_at timestamptz not null default now(),
      constraint tracking_events_status_check check (status in ('pending', 'label_created', 'in_transit', 'out_for_delivery', 'delivered', 'exception', 'returned')),
      -- The same report twice (a carrier retrying, staff re-entering it) is one event.
      constraint tracking_events_once unique (shipment_id, status, occurred_at, description),
      constraint tracking_events_carrier_event_unique unique (carrier_event_id)
    )`);
    this.addSql("create index tracking_events_timeline on tracking_events (shipment_id, occurred_at, id)");
  }
}
