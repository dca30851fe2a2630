/**
 * The Product service's tables: the eight of seed 000 (products, categories,
 * product_categories, product_variants, product_images, product_inventory,
 * product_reviews, product_tags) and what the contract adds: the SKU registry
 * (SKUs are unique over products and variants), stock reservations with their
 * lines and per-location allocations, the stock adjustment log, restocks of
 * returns, helpful votes, and the word list behind "did you mean".
 *
 * Money columns are bigint minor units with the product's currency. Stock
 * numbers are kept consistent by CHECK constraints (0 <= reserved <= on hand),
 * available is a generated column. The search document (weighted tsvector) is
 * maintained by triggers. Committed: never edit, add a new migration instead.
 */
import { Migration } from "@mikro-orm/migrations";

export class ProductTables extends Migration {
  override async up(): Promise<void> {
    this.addSql("create extension if not exists pg_trgm");

    this.addSql(`create table categories (
      id uuid primary key,
      name text not null,
      slug text not null,
      description text not null default '',
      parent_id uuid references categories (id) on delete restrict,
      level int not null default 0,
      sort_order int not null default 0,
      image_url text,
      is_active boolean not null default true,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint categories_slug_unique unique (slug),
      constraint categories_level_range check (level between 0 and 4),
      constraint categories_not_own_parent check (parent_id is null or parent_id <> id),
      constraint categories_root_level check ((parent_id is null) = (level = 0))
    )`);
    this.addSql("create index categories_children on categories (parent_id, sort_order, name)");
    this.addSql("create index categories_name_trgm on categories using gin (lower(name) gin_trgm_ops)");

    this.addSql(`create table products (
      id uuid primary key,
      sku text not null,
      name text not null,
      slug text not null,
      description text not null default '',
      short_description text not null default '',
      currency char(3) not null,
      price_minor bigint not null,
      compare_at_price_minor bigint,
      -- Admin-only data: never in a customer view or an event.
      cost_price_minor bigint,
      status text not null default 'draft',
      is_visible boolean not null default true,
      allow_backorder boolean not null default false,
      -- Units available now (on hand minus reserved; over variants for a product with variants).
      stock_quantity int not null default 0,
      stock_status text not null default 'out_of_stock',
      -- Item-level stock settings, used while the product has no variants.
      low_stock_threshold int not null default 0,
      low_stock boolean not null default false,
      weight_grams int not null default 0,
      length_mm int,
      width_mm int,
      height_mm int,
      meta_title text not null default '',
      meta_description text not null default '',
      attributes jsonb not null default '{}',
      -- Lowest and highest price over the product and its variants ("from" price, sorting, filters).
      min_price_minor bigint not null,
      max_price_minor bigint not null,
      variant_count int not null default 0,
      -- Rating summary of approved reviews, kept with every moderation.
      rating_count int not null default 0,
      rating_sum int not null default 0,
      rating_1_count int not null default 0,
      rating_2_count int not null default 0,
      rating_3_count int not null default 0,
      rating_4_count int not null default 0,
      rating_5_count int not null default 0,
      -- Hundredths of a star, rounded half up.
      rating_average_hundredths int generated always as
        (case when rating_count = 0 then 0 else (rating_sum * 200 + rating_count) / (2 * rating_count) end) stored,
      search_vector tsvector not null default ''::tsvector,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      published_at timestamptz,
      constraint products_slug_unique unique (slug),
      constraint products_status_check check (status in ('draft', 'active', 'archived')),
      constraint products_stock_status_check check (stock_status in ('in_stock', 'out_of_stock', 'backorder')),
      constraint products_currency_check check (currency ~ '^[A-Z]{3}$'),
      constraint products_price_non_negative check (price_minor >= 0),
      constraint products_compare_at_above_price check (compare_at_price_minor is null or compare_at_price_minor > price_minor),
      constraint products_cost_non_negative check (cost_price_minor is null or cost_price_minor >= 0),
      constraint products_price_range check (min_price_minor <= max_price_minor),
      constraint products_stock_non_negative check (stock_quantity >= 0),
      constraint products_low_stock_threshold_non_negative check (low_stock_threshold >= 0),
      constraint products_attributes_object check (jsonb_typeof(attributes) = 'object'),
      constraint products_rating_counts check (rating_count = rating_1_count + rating_2_count + rating_3_count + rating_4_count + rating_5_count)
    )`);
    this.addSql("create index products_sku on products (lower(sku))");
    this.addSql("create index products_newest on products ((coalesce(published_at, created_at)) desc, id desc)");
    this.addSql("create index products_price on products (min_price_minor, id)");
    this.addSql("create index products_name on products (lower(name), id)");
    this.addSql("create index products_rating on products (rating_average_hundredths desc, rating_count desc, id desc)");
    this.addSql("create index products_status on products (status, is_visible)");
    this.addSql("create index products_search on products using gin (search_vector)");
    this.addSql("create index products_name_trgm on products using gin (lower(name) gin_trgm_ops)");
    this.addSql("create index products_attributes on products using gin (attributes jsonb_path_ops)");

    this.addSql(`create table product_variants (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      sku text not null,
      name text not null,
      price_minor bigint not null,
      compare_at_price_minor bigint,
      attributes jsonb not null,
      image_url text,
      -- Units of this variant available now, and its stock status (seed columns), kept by the stock code.
      stock_quantity int not null default 0,
      stock_status text not null default 'out_of_stock',
      low_stock_threshold int not null default 0,
      low_stock boolean not null default false,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      -- jsonb equality ignores key order: two variants never have the same options.
      constraint product_variants_attributes_unique unique (product_id, attributes),
      constraint product_variants_attributes_object check (jsonb_typeof(attributes) = 'object' and attributes <> '{}'),
      constraint product_variants_price_non_negative check (price_minor >= 0),
      constraint product_variants_compare_at_above_price check (compare_at_price_minor is null or compare_at_price_minor > price_minor),
      constraint product_variants_stock_status_check check (stock_status in ('in_stock', 'out_of_stock', 'backorder')),
      constraint product_variants_stock_non_negative check (stock_quantity >= 0),
      constraint product_variants_low_stock_threshold_non_negative check (low_stock_threshold >= 0)
    )`);
    this.addSql("create index product_variants_product on product_variants (product_id, created_at, id)");
    this.addSql("create index product_variants_attributes on product_variants using gin (attributes jsonb_path_ops)");

    // SKUs are unique over products and variants together (case-insensitively);
    // the triggers below keep this registry, so no code path can forget it.
    this.addSql(`create table product_skus (
      sku_key text primary key,
      owner_id uuid not null,
      product_id uuid not null references products (id) on delete cascade
    )`);
    this.addSql("create index product_skus_owner on product_skus (owner_id)");
    this.addSql(`create function product_skus_sync() returns trigger language plpgsql as $$
      begin
        if tg_op in ('UPDATE', 'DELETE') then
          delete from product_skus where sku_key = lower(old.sku) and owner_id = old.id;
        end if;
        if tg_op in ('INSERT', 'UPDATE') then
          -- Separate branches: NEW has no product_id on products.
          if tg_table_name = 'products' then
            insert into product_skus (sku_key, owner_id, product_id) values (lower(new.sku), new.id, new.id);
          else
            insert into product_skus (sku_key, owner_id, product_id) values (lower(new.sku), new.id, new.product_id);
          end if;
        end if;
        return null;
      end $$`);
    for (const table of ["products", "product_variants"]) {
      this.addSql(`create trigger ${table}_sku_insert after insert on ${table} for each row execute function product_skus_sync()`);
      this.addSql(
        `create trigger ${table}_sku_update after update of sku on ${table} for each row when (lower(old.sku) is distinct from lower(new.sku)) execute function product_skus_sync()`,
      );
      this.addSql(`create trigger ${table}_sku_delete after delete on ${table} for each row execute function product_skus_sync()`);
    }

    this.addSql(`create table product_categories (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      category_id uuid not null references categories (id) on delete restrict,
      -- 0 is the primary category.
      position int not null default 0,
      created_at timestamptz not null default now(),
      constraint product_categories_unique unique (product_id, category_id)
    )`);
    this.addSql("create index product_categories_category on product_categories (category_id, product_id)");

    this.addSql(`create table product_images (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      url text not null,
      alt_text text not null default '',
      sort_order int not null default 0,
      is_primary boolean not null default false,
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index product_images_product on product_images (product_id, sort_order, created_at)");
    // At most one primary image per product; the code keeps "exactly one while there are any".
    this.addSql("create unique index product_images_one_primary on product_images (product_id) where is_primary");

    this.addSql(`create table product_tags (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      tag text not null,
      created_at timestamptz not null default now(),
      constraint product_tags_unique unique (product_id, tag),
      constraint product_tags_normalized check (tag = lower(btrim(tag)) and tag <> '')
    )`);
    this.addSql("create index product_tags_tag on product_tags (tag)");

    // One row per sellable item (product, or variant) and location.
    this.addSql(`create table product_inventory (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      variant_id uuid references product_variants (id) on delete cascade,
      location text not null default 'default',
      quantity int not null default 0,
      reserved_quantity int not null default 0,
      available_quantity int generated always as (quantity - reserved_quantity) stored,
      last_restocked_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint product_inventory_item_location_unique unique nulls not distinct (product_id, variant_id, location),
      constraint product_inventory_quantity_non_negative check (quantity >= 0),
      constraint product_inventory_reserved_non_negative check (reserved_quantity >= 0),
      constraint product_inventory_reserved_within_quantity check (reserved_quantity <= quantity)
    )`);
    this.addSql("create index product_inventory_variant on product_inventory (variant_id) where variant_id is not null");
    this.addSql("create index product_inventory_location on product_inventory (location)");

    this.addSql(`create table stock_reservations (
      id uuid primary key,
      order_id uuid not null,
      status text not null default 'active',
      -- Canonical form of the lines (product, variant, quantity), to recognise a replay.
      lines_signature text not null,
      expires_at timestamptz not null,
      created_at timestamptz not null default now(),
      committed_at timestamptz,
      released_at timestamptz,
      release_reason text,
      -- Set when a cancelled order's committed units were put back on hand.
      stock_returned_at timestamptz,
      constraint stock_reservations_status_check check (status in ('active', 'committed', 'released', 'expired'))
    )`);
    // One live (or final but not expired) reservation per order.
    this.addSql("create unique index stock_reservations_one_per_order on stock_reservations (order_id) where status <> 'expired'");
    this.addSql("create index stock_reservations_order on stock_reservations (order_id, created_at desc)");
    this.addSql("create index stock_reservations_expiry on stock_reservations (expires_at) where status = 'active'");
    this.addSql("create index stock_reservations_newest on stock_reservations (created_at desc, id desc)");

    this.addSql(`create table stock_reservation_lines (
      id uuid primary key,
      reservation_id uuid not null references stock_reservations (id) on delete cascade,
      line_index int not null,
      product_id uuid not null references products (id),
      variant_id uuid,
      sku text not null,
      quantity int not null,
      backordered_quantity int not null default 0,
      constraint stock_reservation_lines_index_unique unique (reservation_id, line_index),
      constraint stock_reservation_lines_quantity check (quantity > 0),
      constraint stock_reservation_lines_backordered check (backordered_quantity between 0 and quantity)
    )`);
    this.addSql("create index stock_reservation_lines_product on stock_reservation_lines (product_id)");
    this.addSql("create index stock_reservation_lines_variant on stock_reservation_lines (variant_id) where variant_id is not null");

    this.addSql(`create table stock_reservation_allocations (
      id uuid primary key,
      line_id uuid not null references stock_reservation_lines (id) on delete cascade,
      inventory_id uuid references product_inventory (id) on delete set null,
      location text not null,
      quantity int not null,
      constraint stock_reservation_allocations_quantity check (quantity > 0)
    )`);
    this.addSql("create index stock_reservation_allocations_line on stock_reservation_allocations (line_id)");

    this.addSql(`create table stock_adjustments (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      variant_id uuid,
      location text not null,
      quantity_before int not null,
      quantity_after int not null,
      reason text not null,
      note text not null default '',
      -- Who: an admin's user id, or "service:<name>".
      actor text not null,
      -- The return or order it came from, when any.
      reference_id uuid,
      created_at timestamptz not null default now(),
      constraint stock_adjustments_reason_check check (reason in ('received', 'stocktake', 'damaged', 'lost', 'returned', 'transfer', 'other', 'order_cancelled'))
    )`);
    this.addSql("create index stock_adjustments_item on stock_adjustments (product_id, variant_id, created_at desc)");

    this.addSql(`create table stock_restocks (
      return_id uuid primary key,
      order_id uuid,
      request_hash text not null,
      skipped_line_indexes int[] not null default '{}',
      created_at timestamptz not null default now()
    )`);

    this.addSql(`create table product_reviews (
      id uuid primary key,
      product_id uuid not null references products (id) on delete cascade,
      user_id uuid not null,
      rating smallint not null,
      title text not null default '',
      comment text not null default '',
      author_display_name text not null default '',
      is_verified_purchase boolean not null default false,
      status text not null default 'pending',
      -- The seed's flag, derived from the moderation status.
      is_approved boolean generated always as (status = 'approved') stored,
      rejection_reason text,
      helpful_count int not null default 0,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      moderated_at timestamptz,
      constraint product_reviews_one_per_user unique (product_id, user_id),
      constraint product_reviews_rating_range check (rating between 1 and 5),
      constraint product_reviews_status_check check (status in ('pending', 'approved', 'rejected')),
      constraint product_reviews_helpful_non_negative check (helpful_count >= 0)
    )`);
    this.addSql("create index product_reviews_approved on product_reviews (product_id, created_at desc, id desc) where status = 'approved'");
    this.addSql("create index product_reviews_user on product_reviews (user_id, created_at desc, id desc)");
    this.addSql("create index product_reviews_moderation on product_reviews (status, created_at, id)");

    this.addSql(`create table review_helpful_votes (
      review_id uuid not null references product_reviews (id) on delete cascade,
      user_id uuid not null,
      created_at timestamptz not null default now(),
      primary key (review_id, user_id)
    )`);

    // Words of names, tags and category names, for "did you mean" and typo-tolerant suggestions.
    // Deliberately without a unique constraint: concurrent catalog writes adding the same new
    // word never wait on (or deadlock over) each other; a rare duplicate is harmless to readers.
    this.addSql("create table search_words (word text not null)");
    this.addSql("create index search_words_word on search_words (word)");
    this.addSql("create index search_words_trgm on search_words using gin (word gin_trgm_ops)");
    this.addSql(`create function search_words_of(source text) returns setof text language sql immutable as $$
      select distinct w from regexp_split_to_table(lower(coalesce(source, '')), '[^[:alnum:]]+') as w
       where length(w) >= 3 and w !~ '^[0-9]+$'
    $$`);

    // The search document: name (A), tags and category names (B), short description and
    // description (C), attribute values (D).
    this.addSql(`create function product_search_vector(p_id uuid, p_name text, p_short text, p_description text, p_attributes jsonb)
      returns tsvector language sql stable as $$
      select setweight(to_tsvector('english', coalesce(p_name, '')), 'A')
          || setweight(to_tsvector('english', coalesce((select string_agg(t.tag, ' ') from product_tags t where t.product_id = p_id), '')), 'B')
          || setweight(to_tsvector('english', coalesce((select string_agg(c.name, ' ') from product_categories pc join categories c on c.id = pc.category_id
                                                         where pc.product_id = p_id), '')), 'B')
          || setweight(to_tsvector('english', coalesce(p_short, '') || ' ' || coalesce(p_description, '')), 'C')
          || setweight(to_tsvector('english', coalesce((select string_agg(a.value, ' ') from jsonb_each_text(p_attributes) a), '')), 'D')
    $$`);
    this.addSql(`create function products_search_document() returns trigger language plpgsql as $$
      begin
        new.search_vector := product_search_vector(new.id, new.name, new.short_description, new.description, new.attributes);
        return new;
      end $$`);
    this.addSql(
      "create trigger products_search_document before insert or update of name, short_description, description, attributes on products for each row execute function products_search_document()",
    );
    // Tags and categories change in their own tables: statement triggers refresh the
    // documents of the products touched, once per statement (bulk loads stay fast).
    this.addSql(`create function products_search_refresh() returns trigger language plpgsql as $$
      begin
        update products p set search_vector = product_search_vector(p.id, p.name, p.short_description, p.description, p.attributes)
         where p.id in (select distinct product_id from changed_rows);
        return null;
      end $$`);
    for (const table of ["product_tags", "product_categories"]) {
      this.addSql(
        `create trigger ${table}_search_insert after insert on ${table} referencing new table as changed_rows for each statement execute function products_search_refresh()`,
      );
      this.addSql(
        `create trigger ${table}_search_delete after delete on ${table} referencing old table as changed_rows for each statement execute function products_search_refresh()`,
      );
    }
    this.addSql(`create function categories_search_rename() returns trigger language plpgsql as $$
      begin
        update products p set search_vector = product_search_vector(p.id, p.name, p.short_description, p.description, p.attributes)
         where p.id in (select pc.product_id from product_categories pc where pc.category_id = new.id);
        insert into search_words (word) select w from search_words_of(new.name) w where not exists (select 1 from search_words s where s.word = w);
        return null;
      end $$`);
    this.addSql(
      "create trigger categories_search_rename after update of name on categories for each row when (old.name is distinct from new.name) execute function categories_search_rename()",
    );

    this.addSql(`create function search_words_from_names() returns trigger language plpgsql as $$
      begin
        insert into search_words (word)
        select w from (select distinct search_words_of(r.name) as w from changed_rows r) x where not exists (select 1 from search_words s where s.word = x.w);
        return null;
      end $$`);
    this.addSql(`create function search_words_from_tags() returns trigger language plpgsql as $$
      begin
        insert into search_words (word)
        select w from (select distinct search_words_of(r.tag) as w from changed_rows r) x where not exists (select 1 from search_words s where s.word = x.w);
        return null;
      end $$`);
    this.addSql(
      "create trigger products_search_words after insert on products referencing new table as changed_rows for each statement execute function search_words_from_names()",
    );
    this.addSql(
      "create trigger categories_search_words after insert on categories referencing new table as changed_rows for each statement execute function search_words_from_names()",
    );
    this.addSql(
      "create trigger product_tags_search_words after insert on product_tags referencing new table as changed_rows for each statement execute function search_words_from_tags()",
    );
    this.addSql(`create function search_words_from_renamed_product() returns trigger language plpgsql as $$
      begin
        insert into search_words (word) select w from search_words_of(new.name) w where not exists (select 1 from search_words s where s.word = w);
        return null;
      end $$`);
    this.addSql(
      "create trigger products_search_words_rename after update of name on products for each row when (old.name is distinct from new.name) execute function search_words_from_renamed_product()",
    );

    // Stock items as ListStockItems sees them: a product without variants, or one variant.
    this.addSql(`create view stock_items as
      select p.id as product_id, null::uuid as variant_id, p.sku, p.name as product_name, '' as variant_name,
             p.stock_quantity as available_quantity, p.stock_status, p.low_stock_threshold, p.low_stock, p.updated_at
        from products p where p.variant_count = 0
      union all
      select v.product_id, v.id, v.sku, p.name, v.name, v.stock_quantity, v.stock_status, v.low_stock_threshold, v.low_stock, v.updated_at
        from product_variants v join products p on p.id = v.product_id`);
  }
}
