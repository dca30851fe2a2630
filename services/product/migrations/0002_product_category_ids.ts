/**
 * Each product's categories, also kept on the product row (category_ids: its
 * product_categories, in id order), so that search reads them with the hit it
 * already fetched instead of one index lookup per hit (the category facet over
 * thousands of hits, and the category filter). The statement triggers that
 * refresh the search document after product_categories changes now refresh
 * category_ids in the same update (one new row version per product, as
 * before); an update of product_categories (the code replaces a product's set
 * by delete and insert) refreshes both as well. Ancestors are not stored: the
 * tree and its visibility are read live (a few dozen rows), so moving or
 * deactivating a category never rewrites products. Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class ProductCategoryIds extends Migration {
  override async up(): Promise<void> {
    this.addSql("alter table products add column category_ids uuid[] not null default '{}'");
    this.addSql(`update products p set category_ids = c.ids
      from (select product_id, array_agg(category_id order by category_id) as ids from product_categories group by product_id) c
     where c.product_id = p.id`);
    // The products of a category's subtree (a browse without a query): `category_ids && subtree`.
    this.addSql("create index products_category_ids on products using gin (category_ids)");
    this.addSql(`create function product_category_ids(p_id uuid) returns uuid[] language sql stable as $$
      select coalesce(array_agg(pc.category_id order by pc.category_id), '{}') from product_categories pc where pc.product_id = p_id
    $$`);
    this.addSql(`create function products_categories_refresh() returns trigger language plpgsql as $$
      begin
        update products p set search_vector = product_search_vector(p.id, p.name, p.short_description, p.description, p.attributes),
                              category_ids = product_category_ids(p.id)
         where p.id in (select distinct product_id from changed_rows);
        return null;
      end $$`);
    this.addSql(`create function products_categories_update_refresh() returns trigger language plpgsql as $$
      begin
        update products p set search_vector = product_search_vector(p.id, p.name, p.short_description, p.description, p.attributes),
                              category_ids = product_category_ids(p.id)
         where p.id in (select product_id from old_rows union select product_id from new_rows);
        return null;
      end $$`);
    this.addSql("drop trigger product_categories_search_insert on product_categories");
    this.addSql("drop trigger product_categories_search_delete on product_categories");
    this.addSql(
      "create trigger product_categories_refresh_insert after insert on product_categories referencing new table as changed_rows for each statement execute function products_categories_refresh()",
    );
    this.addSql(
      "create trigger product_categories_refresh_delete after delete on product_categories referencing old table as changed_rows for each statement execute function products_categories_refresh()",
    );
    this.addSql(
      "create trigger product_categories_refresh_update after update on product_categories referencing old table as old_rows new table as new_rows for each statement execute function products_categories_update_refresh()",
    );
  }
}
