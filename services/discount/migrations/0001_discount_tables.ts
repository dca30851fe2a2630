/**
 * The Discount service's tables (ARCHITECTURE.md discount_db: promotions,
 * discount_rules, coupons, coupon_usage, promotion_usage) plus redemptions,
 * one row per order that makes RedeemDiscounts and ReleaseRedemption
 * idempotent. A promotion's value is typed columns, not one "value" column,
 * so the database checks each type's value. The counters (budget_used_minor,
 * usage_count, times_used) are changed only by conditional UPDATEs in the
 * redemption's transaction; the CHECKs make overspending impossible even for
 * a bug. Committed: never edit, add a new migration instead.
 */
import { Migration } from "@mikro-orm/migrations";

export class DiscountTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table promotions (
      id uuid primary key,
      name text not null,
      description text not null default '',
      type text not null,
      percent_off_bps integer,
      amount_off_minor bigint,
      buy_quantity integer,
      get_quantity integer,
      get_discount_bps integer,
      max_applications integer,
      max_discount_minor bigint,
      -- null: a promotion without amounts, for carts in every currency.
      currency char(3),
      is_automatic boolean not null default false,
      priority integer not null default 0,
      stackable boolean not null default false,
      budget_minor bigint,
      budget_used_minor bigint not null default 0,
      usage_count bigint not null default 0,
      starts_at timestamptz,
      ends_at timestamptz,
      is_active boolean not null default false,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint promotions_type_check check (type in ('percentage', 'fixed_amount', 'free_shipping', 'buy_x_get_y')),
      constraint promotions_value_check check (
        (type = 'percentage') = (percent_off_bps is not null)
        and (type = 'fixed_amount') = (amount_off_minor is not null)
        and (type = 'buy_x_get_y') = (buy_quantity is not null and get_quantity is not null and get_discount_bps is not null and max_applications is not null)),
      constraint promotions_budget_check check (budget_used_minor >= 0 and (budget_minor is null or budget_used_minor <= budget_minor)),
      constraint promotions_usage_check check (usage_count >= 0),
      constraint promotions_window_check check (starts_at is null or ends_at is null or ends_at > starts_at)
    )`);
    // Candidates of every quote: the live automatic promotions.
    this.addSql("create index promotions_automatic on promotions (priority desc) where is_active and is_automatic");
    this.addSql("create index promotions_created on promotions (created_at, id)");

    this.addSql(`create table discount_rules (
      id uuid primary key,
      promotion_id uuid not null references promotions (id) on delete cascade,
      rule_type text not null,
      -- {"amount_minor": "5000"} | {"ids": [...]} | {"quantity": 2} | {"first_order": true}
      value jsonb not null,
      created_at timestamptz not null default now(),
      constraint discount_rules_type_check check (rule_type in ('min_subtotal', 'product_ids', 'category_ids', 'min_quantity', 'first_order', 'customer_ids')),
      constraint discount_rules_one_per_type unique (promotion_id, rule_type)
    )`);

    this.addSql(`create table coupons (
      id uuid primary key,
      -- Stored in upper case; unique in any letter case.
      code text not null,
      promotion_id uuid not null references promotions (id) on delete cascade,
      usage_limit integer not null default 0,
      usage_limit_per_user integer not null default 0,
      times_used integer not null default 0,
      starts_at timestamptz,
      ends_at timestamptz,
      is_active boolean not null default true,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint coupons_usage_check check (times_used >= 0 and (usage_limit = 0 or times_used <= usage_limit)),
      constraint coupons_window_check check (starts_at is null or ends_at is null or ends_at > starts_at)
    )`);
    this.addSql("create unique index coupons_code_unique on coupons (lower(code))");
    this.addSql("create index coupons_promotion on coupons (promotion_id, created_at)");
    this.addSql("create index coupons_created on coupons (created_at, id)");

    this.addSql(`create table redemptions (
      order_id uuid primary key,
      user_id uuid not null,
      currency char(3) not null,
      status text not null,
      expected_total_minor bigint not null,
      -- The Redemption message as recorded (binary protobuf): a retry answers it without recomputing.
      result bytea not null,
      redeemed_at timestamptz not null default now(),
      released_at timestamptz,
      release_reason text,
      constraint redemptions_status_check check (status in ('redeemed', 'released'))
    )`);

    this.addSql(`create table promotion_usage (
      id uuid primary key,
      promotion_id uuid not null references promotions (id),
      coupon_id uuid references coupons (id),
      user_id uuid not null,
      order_id uuid not null references redemptions (order_id),
      discount_amount_minor bigint not null,
      currency char(3) not null,
      created_at timestamptz not null default now(),
      released_at timestamptz,
      constraint promotion_usage_per_order unique (order_id, promotion_id)
    )`);
    this.addSql("create index promotion_usage_promotion on promotion_usage (promotion_id, created_at desc, id desc)");
    this.addSql("create index promotion_usage_created on promotion_usage (created_at desc, id desc)");

    this.addSql(`create table coupon_usage (
      id uuid primary key,
      coupon_id uuid not null references coupons (id),
      promotion_id uuid not null references promotions (id),
      user_id uuid not null,
      order_id uuid not null references redemptions (order_id),
      discount_amount_minor bigint not null,
      currency char(3) not null,
      created_at timestamptz not null default now(),
      released_at timestamptz,
      constraint coupon_usage_per_order unique (order_id, coupon_id)
    )`);
    // The per-customer limit counts a customer's unreleased uses of a coupon.
    this.addSql("create index coupon_usage_user on coupon_usage (coupon_id, user_id) where released_at is null");
    this.addSql("create index coupon_usage_created on coupon_usage (created_at desc, id desc)");
  }
}
